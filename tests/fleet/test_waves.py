"""The wave engine on an in-memory fleet with a simulated clock (fast; balena is tested in
test_fleet_balena.py)."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.fleet_report import HealthTag, decode, encode, summarize
from kernel.errors import FleetError
from provisioning.fleet.progress import LineProgress, TerminalProgress, progress_for
from provisioning.fleet.waves import (
    Change,
    Device,
    Gate,
    Mark,
    Rollout,
    WaveStatus,
    plan_waves,
    promote,
    rollback,
)
from tests.fleet.memory_fleet import FakeClock, MemoryFleet, Recorder

GOOD, BAD = "a" * 40, "b" * 40
GATE = Gate(success=0.95, error=0.05, watch_s=120, update_timeout_s=300, stale_s=60, poll_s=10)


def healthy_unless_bad(d):
    return (d.release != BAD and d.env.get("KBE_MODE") != "broken", 0)


def run(fleet, change, gate=GATE, canary=1, percents=(10, 50, 100), rid="r1"):
    rec = Recorder()
    plan = plan_waves(fleet.list_devices(), change, canary, percents)
    result = Rollout(fleet, change, gate, rec, clock=fleet.clock, rollout_id=rid).run(plan)
    return result, rec, plan


def test_plan_canary_first_online_then_cumulative_percentages():
    devs = [
        Device(f"d{i:02d}", f"d{i:02d}", online=i != 0, last_seen=None, release="x", pinned=None)
        for i in range(20)
    ]
    devs.append(Device("zz", "zz", True, None, GOOD, GOOD))  # already on the change: not planned
    waves = plan_waves(devs, Change(release=GOOD), canary=1, percents=[10, 50, 100])
    assert [len(w) for w in waves] == [1, 1, 8, 10]
    assert waves[0][0].uuid == "d01"
    assert waves[0][0].online
    assert waves[-1][-1].uuid == "d00"  # offline devices last
    assert all(d.uuid != "zz" for w in waves for d in w)


@given(
    n=st.integers(0, 60),
    canary=st.integers(0, 5),
    percents=st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True).map(sorted),
    offline=st.sets(st.integers(0, 59)),
)
def test_plan_waves_partition_the_candidates(n, canary, percents, offline):
    devs = [Device(f"d{i:02d}", "n", i not in offline, None, "x", None) for i in range(n)]
    waves = plan_waves(devs, Change(release=GOOD), canary, percents)
    flat = [d.uuid for w in waves for d in w]
    assert sorted(flat) == sorted(d.uuid for d in devs)  # every device once
    assert all(waves)  # no empty wave
    if waves and canary and any(d.online for d in devs):
        assert len(waves[0]) == min(canary, sum(d.online for d in devs))
        assert all(d.online for d in waves[0])


@pytest.mark.parametrize("percents", [[], [0, 50], [50, 10], [120]])
def test_plan_refuses_bad_percentages(percents):
    with pytest.raises(FleetError, match="waves"):
        plan_waves([], Change(release=GOOD), 1, percents)


def test_good_release_passes_every_wave_and_stays_marked_until_promote():
    clock = FakeClock()
    fleet = MemoryFleet(20, clock, healthy_unless_bad)
    result, rec, plan = run(fleet, Change(release=GOOD))
    assert result.ok
    assert result.waves_passed == len(plan) == 4
    assert all(d.pinned == GOOD and d.release == GOOD for d in fleet.devices.values())
    assert len(fleet.marks) == 20
    assert any("wave 4/4 passed" in e for e in rec.events)
    # Each wave was watched for the whole watch time: 4 waves x >= 120 s.
    assert clock.slept >= 4 * GATE.watch_s
    change, moved = promote(fleet)
    assert change == Change(release=GOOD)
    assert len(moved) == 20
    assert fleet.fleet_release == GOOD
    assert not fleet.marks
    assert all(d.pinned is None for d in fleet.devices.values())


def test_bad_release_stops_at_the_canary_and_rolls_it_back_only():
    clock = FakeClock()
    fleet = MemoryFleet(20, clock, healthy_unless_bad)
    fleet.devices["dev000"].pinned = "old"  # the canary was pinned before: it goes back to that pin
    result, rec, plan = run(fleet, Change(release=BAD))
    assert not result.ok
    assert result.failed_wave == 0
    assert result.waves_passed == 0
    canary = plan[0][0].uuid
    assert result.rolled_back == [canary]
    assert "agent unhealthy" in result.reasons[canary]
    pins = [c for c in fleet.calls if c[0] == "pin"]
    assert pins == [("pin", (canary,), BAD), ("pin", (canary,), "old")]  # nobody else was touched
    assert fleet.devices[canary].pinned == "old"
    assert not fleet.marks
    # It stopped at the first unhealthy report, not after the watch time.
    assert clock.slept < GATE.watch_s
    assert any("FAILED" in e for e in rec.events)


def test_error_threshold_stops_a_wave_success_threshold_lets_it_pass():
    def one_bad(d):
        return (not (d.uuid == "dev005" and d.release == GOOD), 0)

    fleet = MemoryFleet(10, FakeClock(), one_bad)
    result, _, _ = run(fleet, Change(release=GOOD), canary=0, percents=[100])
    assert not result.ok
    assert list(result.reasons) == ["dev005"]
    assert all(d.pinned is None for d in fleet.devices.values())  # the whole wave went back

    fleet = MemoryFleet(10, FakeClock(), one_bad)
    lenient = Gate(success=0.9, error=0.1, watch_s=60, update_timeout_s=300, poll_s=10)
    result, _, _ = run(fleet, Change(release=GOOD), gate=lenient, canary=0, percents=[100])
    assert result.ok


def test_silent_device_fails_after_the_update_timeout():
    clock = FakeClock()
    fleet = MemoryFleet(3, clock, healthy_unless_bad)
    fleet.devices["dev000"].reports = False
    result, _, _ = run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert result.failed_wave == 0
    assert "no health report" in result.reasons["dev000"]
    assert GATE.update_timeout_s <= clock.slept <= GATE.update_timeout_s + 2 * GATE.poll_s


def test_a_report_from_the_old_process_does_not_count():
    """A device that says it runs the release but whose agent did not restart stays pending."""
    clock = FakeClock()
    fleet = MemoryFleet(1, clock, healthy_unless_bad)
    fleet._step = lambda: [
        setattr(d, "release", d.pinned or d.release) for d in fleet.devices.values()
    ]  # no restart
    result, _, _ = run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert not result.ok
    assert "no health report" in result.reasons["dev000"]


def test_restarts_during_the_watch_fail_the_wave():
    fleet = MemoryFleet(2, FakeClock(), lambda d: (True, 1 if d.release == GOOD else 0))
    result, _, _ = run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert result.failed_wave == 0
    assert "restarted" in next(iter(result.reasons.values()))


def test_device_going_offline_during_the_watch_fails():
    clock = FakeClock()
    fleet = MemoryFleet(1, clock, healthy_unless_bad)
    original = fleet.read_health

    def flaky():
        out = original()
        if clock.slept >= 20:
            fleet.devices["dev000"].online = False
        return out

    fleet.read_health = flaky
    result, _, _ = run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert not result.ok


def test_variable_rollout_restores_previous_values_on_failure():
    fleet = MemoryFleet(4, FakeClock(), healthy_unless_bad)
    fleet.devices["dev000"].env["KBE_MODE"] = "normal"
    result, _, plan = run(fleet, Change(env_name="KBE_MODE", env_value="broken"), canary=2, percents=[100])
    assert result.failed_wave == 0
    assert [d.uuid for d in plan[0]] == ["dev000", "dev001"]
    assert fleet.devices["dev000"].env == {"KBE_MODE": "normal"}
    assert fleet.devices["dev001"].env == {}
    assert all(d.env.get("KBE_MODE") != "broken" for d in fleet.devices.values())


def test_rollback_command_reverts_one_wave_of_a_passed_rollout():
    fleet = MemoryFleet(10, FakeClock(), healthy_unless_bad)
    result, _, plan = run(fleet, Change(release=GOOD), percents=[100])
    assert result.ok
    reverted = rollback(fleet, "r1", wave=1)
    assert reverted == sorted(d.uuid for d in plan[1])
    assert fleet.devices[plan[0][0].uuid].pinned == GOOD
    assert all(fleet.devices[u].pinned is None for u in reverted)
    with pytest.raises(FleetError, match="no device"):
        rollback(fleet, "nope")


def test_promote_needs_a_single_marked_change():
    fleet = MemoryFleet(2, FakeClock(), healthy_unless_bad)
    with pytest.raises(FleetError, match="no rollout is marked"):
        promote(fleet)
    _change, moved = promote(fleet, Change(env_name="KBE_MODE", env_value="x"))
    assert fleet.fleet_env == {"KBE_MODE": "x"}
    assert moved == []


@given(
    ok=st.booleans(),
    at=st.floats(0, 4e9, allow_nan=False),
    started=st.floats(0, 4e9, allow_nan=False),
    restarts=st.integers(0, 10**6),
    uplink=st.none() | st.booleans(),
    why=st.lists(st.text(max_size=30), max_size=5),
)
def test_health_tag_round_trip(ok, at, started, restarts, uplink, why):
    tag = HealthTag(ok, round(at, 1), round(started, 1), restarts, uplink, 3, tuple(why))
    assert decode(encode(tag)) == tag


@given(st.text(max_size=80))
def test_health_tag_decode_never_raises(value):
    decode(value)
    Mark.decode(value)


def test_summary_names_what_is_wrong():
    report = {
        "ok": False,
        "tasks": {"source:rs485": {"state": "cooling-down", "restarts": 6, "last_error": "DeviceTimeout"}},
        "writer": {"stalled": True},
        "sync": {"connected": False},
        "buffer": {"depth": 12},
    }
    tag = summarize(report, started=10.0, now=20.0)
    assert not tag.ok
    assert tag.restarts == 6
    assert tag.depth == 12
    assert tag.uplink is False
    assert tag.why == ("source:rs485 cooling down: DeviceTimeout", "writer stalled", "uplink down")


def test_progress_bar_on_a_tty_and_a_line_a_minute_otherwise():
    status = WaveStatus(0, 3, 10, healthy=5, failed=1, pending=4)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress_for(Tty()), TerminalProgress)
    out = Tty()
    bar = TerminalProgress(out)
    bar.update(status)
    bar.update(status)
    assert out.getvalue().count("\r") == 2
    assert "5 ok 1 failed 4 pending of 10" in out.getvalue()

    now = [0.0]
    out2 = io.StringIO()
    lines = progress_for(out2)
    assert isinstance(lines, LineProgress)
    lines.clock = lambda: now[0]
    for step in range(181):  # three minutes of updates every second
        now[0] = float(step)
        lines.update(status)
    assert len(out2.getvalue().splitlines()) == 4  # at 0, 60, 120, 180 s


def test_agent_process_restart_during_the_watch_fails():
    clock = FakeClock()
    fleet = MemoryFleet(1, clock, healthy_unless_bad)
    original = fleet.read_health

    def crashing():
        if clock.slept >= 30:
            fleet.devices["dev000"].started = clock.wall()  # the container restarted the agent
        return original()

    fleet.read_health = crashing
    result, _, _ = run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert result.reasons == {"dev000": "agent process restarted during the watch"}


def test_api_read_errors_are_retried_within_a_budget():
    clock = FakeClock()
    fleet = MemoryFleet(2, clock, healthy_unless_bad)
    original = fleet.read_health
    failures = {"left": 3}

    def flaky():
        if failures["left"]:
            failures["left"] -= 1
            raise FleetError("balena API (kbe/x): ConnectionError: refused")
        return original()

    fleet.read_health = flaky
    result, rec, _ = run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert result.ok
    assert sum("read failed" in e for e in rec.events) == 3

    failures["left"] = 100
    fleet = MemoryFleet(2, clock, healthy_unless_bad)
    fleet.read_health = flaky
    with pytest.raises(
        FleetError, match=r"gave up after 6 failed reads in wave 1.*rollback --rollout r1 --wave 1"
    ):
        run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert fleet.marks == {}  # it gave up before changing anything


@given(
    rollout=st.text(min_size=1, max_size=12),
    wave=st.integers(0, 50),
    release=st.none() | st.text(alphabet="0123456789abcdef", min_size=7, max_size=40),
    name=st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True),
    value=st.text(max_size=40),
    previous=st.none() | st.text(max_size=40),
)
def test_rollout_mark_round_trip(rollout, wave, release, name, value, previous):
    change = Change(release=release) if release else Change(env_name=name, env_value=value)
    mark = Mark(rollout, wave, change, previous)
    assert Mark.decode(mark.encode()) == mark


@given(st.integers(0, 10**6), st.sampled_from(["", "s", "m", "h", "ms"]))
def test_duration_parser(n, unit):
    from provisioning.fleet.cli import parse_duration

    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "ms": 0.001}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * scale)


@pytest.mark.parametrize("bad", ["", "ten", "5d", "-1s", "1.2.3m"])
def test_duration_parser_refuses(bad):
    import click

    from provisioning.fleet.cli import parse_duration

    with pytest.raises(click.BadParameter, match="not a duration"):
        parse_duration(bad)


def test_offline_devices_are_left_unchanged_and_reported():
    fleet = MemoryFleet(10, FakeClock(), healthy_unless_bad)
    for u in ("dev007", "dev008"):
        fleet.devices[u].online = False
    result, rec, _ = run(fleet, Change(release=GOOD), canary=1, percents=[50, 100])
    assert result.ok
    assert result.skipped_offline == ["dev007", "dev008"]
    assert fleet.devices["dev007"].pinned is None
    assert "dev007" not in fleet.marks
    assert any("2 devices offline, left unchanged" in e for e in rec.events)
    # Back online, the same rollout plans only them.
    for u in ("dev007", "dev008"):
        fleet.devices[u].online = True
    again = plan_waves(fleet.list_devices(), Change(release=GOOD), 1, [100])
    assert [d.uuid for w in again for d in w] == ["dev007", "dev008"]


def test_variable_plan_skips_devices_that_already_have_the_value():
    devs = [Device(f"d{i}", "n", True, None, "x", None) for i in range(4)]
    change = Change(env_name="KBE_MODE", env_value="eco")
    waves = plan_waves(devs, change, 1, [100], current_env={"d0": "eco", "d1": "normal"})
    assert [d.uuid for w in waves for d in w] == ["d1", "d2", "d3"]


def test_a_device_clock_an_hour_behind_does_not_matter():
    """The changed agent is recognised by a different process start, not by comparing clocks."""
    fleet = MemoryFleet(3, FakeClock(), healthy_unless_bad)
    for d in fleet.devices.values():
        d.skew = -3600.0
    result, _, _ = run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert result.ok


def test_giving_up_after_the_change_leaves_the_wave_marked():
    fleet = MemoryFleet(2, FakeClock(), healthy_unless_bad)
    original_marks, original_health = fleet.set_marks, fleet.read_health
    broken = {"on": False}

    def marks_then_break(marks):
        original_marks(marks)
        broken["on"] = True

    def health():
        if broken["on"]:
            raise FleetError("balena API (kbe/x): RequestError: 503")
        return original_health()

    fleet.set_marks, fleet.read_health = marks_then_break, health
    with pytest.raises(FleetError, match="gave up after 6 failed reads in wave 1"):
        run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert list(fleet.marks) == ["dev000"]  # left for `edge-agent fleet rollback --rollout r1`


def test_the_changed_agent_may_report_before_the_api_shows_its_release():
    """balena reports the running release a while after the new container starts: the new agent's
    first reports arrive while the API still shows the old release. They must count once it flips."""
    clock = FakeClock()
    fleet = MemoryFleet(2, clock, healthy_unless_bad)
    restarted: set[str] = set()

    def slow_report():
        for d in fleet.devices.values():
            target = fleet._target(d)
            if d.release == target:
                continue
            if d.uuid not in restarted:
                d.started = clock.wall()  # the new container runs and reports...
                restarted.add(d.uuid)
            else:
                d.release = target  # ...and one poll later the API shows its release

    fleet._step = slow_report
    result, _, _ = run(fleet, Change(release=GOOD), canary=1, percents=[100])
    assert result.ok
