"""Each envelope rule refuses a violating command; faults flash the junction and latch."""

from __future__ import annotations

import itertools
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.traffic.card import program_card
from control.traffic.config import IntersectionConfig, ite_yellow_s
from control.traffic.envelope import ConflictMatrix, SafetyEnvelope
from control.traffic.runner import Intersection
from drivers.signals.emulator import CONTROL_RUN, ControllerEmulator, DirectLink
from drivers.signals.indications import Indication
from drivers.signals.modbus import ModbusSignalController
from kernel.errors import SafetyViolation, TransportError
from kernel.readings import Priority
from tests.traffic.helpers import GY, FaultyLink, G, R, Rig, SimClock, Y, junction


@pytest.fixture
def rig() -> Rig:
    r = Rig()
    r.go(11)  # start-up all red covers the 12 m crosswalks' clearance (10.9 s)
    return r


def refused(rig: Rig, rule: str, **kw: Indication) -> SafetyViolation:
    before = rig.env.shown()
    with pytest.raises(SafetyViolation) as info:
        rig.env.command(rig.state(**kw))
    assert info.value.rule == rule, str(info.value)
    assert rig.env.shown() == before, "a refused command must not reach the output"
    assert rig.emu.monitor.faults == []
    assert rig.reports[-1].point == "envelope.refused"
    assert rig.reports[-1].value == rule
    return info.value


def ns_green(rig: Rig, seconds: float = 14.0) -> None:
    rig.go(seconds, ns=G, ped_ns=G, ns_left=GY)


@pytest.mark.parametrize(("kmh", "yellow"), [(40, 3.0), (50, 3.5), (60, 4.0)])
def test_ite_yellow(kmh: float, yellow: float) -> None:
    assert ite_yellow_s(kmh) == yellow


def test_legal_cycle_passes_both_monitors(rig: Rig) -> None:
    ns_green(rig, 7)
    rig.go(6, ns=G, ped_ns=Y, ns_left=GY)
    rig.go(3.5, ns=Y, ns_left=Y)
    rig.go(2)
    rig.go(14, ew=G, ped_ew=G, ew_left=GY)
    assert rig.env.latched is None
    assert rig.emu.fault is None
    assert rig.env.refusals == {}


def test_conflicting_greens_refused(rig: Rig) -> None:
    refused(rig, "conflict", ns=G, ew=G)


def test_conflicting_yellow_and_green_refused(rig: Rig) -> None:
    ns_green(rig)
    refused(rig, "conflict", ns=Y, ew=G)


def test_permissive_yielder_showing_protected_green_refused(rig: Rig) -> None:
    refused(rig, "conflict", ns=G, ns_left=G)


def test_vehicle_min_green_refused(rig: Rig) -> None:
    rig.go(2, ns=G, ns_left=GY)
    refused(rig, "min_green", ns=Y, ns_left=GY)


def test_pedestrian_min_walk_refused(rig: Rig) -> None:
    rig.go(3, ns=G, ped_ns=G, ns_left=GY)
    refused(rig, "min_green", ns=G, ped_ns=Y, ns_left=GY)


def test_green_straight_to_red_refused(rig: Rig) -> None:
    ns_green(rig)
    refused(rig, "no_yellow", ns=R, ped_ns=G, ns_left=GY)


def test_walk_straight_to_dont_walk_refused(rig: Rig) -> None:
    ns_green(rig)
    refused(rig, "no_yellow", ns=G, ped_ns=R, ns_left=GY)


def test_yellow_back_to_green_refused(rig: Rig) -> None:
    rig.go(6, ns=G, ns_left=GY)
    rig.go(1, ns=Y, ns_left=GY)
    refused(rig, "yellow_to_green", ns=G, ns_left=GY)


def test_short_yellow_refused(rig: Rig) -> None:
    rig.go(6, ns=G)
    rig.go(1.0, ns=Y)
    refused(rig, "short_yellow")


def test_yellow_beyond_six_seconds_refused(rig: Rig) -> None:
    rig.go(6, ns=G)
    rig.go(6.0, ns=Y)
    rig.clock.t += 0.1
    refused(rig, "long_yellow", ns=Y)


def test_red_clearance_before_conflicting_green_refused(rig: Rig) -> None:
    rig.go(6, ns=G)
    rig.go(3.5, ns=Y)
    rig.go(1.0)
    refused(rig, "red_clearance", ew=G)


def test_red_clearance_is_checked_for_every_foe_after_one_that_may_run_beside(rig: Rig) -> None:
    """A foe that may run beside the group (its permissive partner) is skipped, never the foes after
    it: the matrix's foes are a set, in no fixed order, so the one that may run is put first here."""
    rig.go(6, ew=G)
    rig.go(3.5, ew=Y)
    rig.go(1.0)
    foes = rig.env.matrix.foes["ns"]
    rig.env.matrix.foes["ns"] = ["ns_left", *sorted(foes - {"ns_left"})]  # type: ignore[assignment]
    assert rig.env.matrix.may_run_with("ns", G, "ns_left")
    refused(rig, "red_clearance", ns=G)


def test_pedestrian_clearance_before_conflicting_green_refused(rig: Rig) -> None:
    rig.go(7, ped_ns=G)
    rig.go(3, ped_ns=Y)
    rig.go(2.5)  # 5.5 s since the walk ended, the 12 m crossing needs 10.9 s
    refused(rig, "ped_clearance", ew=G)


def test_short_flashing_dont_walk_refused(rig: Rig) -> None:
    rig.go(7, ped_ns=G)
    rig.go(1, ped_ns=Y)
    refused(rig, "ped_clearance")


def test_yellow_without_green_refused(rig: Rig) -> None:
    refused(rig, "bad_transition", ns=Y)


def test_protected_to_permissive_without_yellow_refused(rig: Rig) -> None:
    rig.go(6, ns_left=G)
    refused(rig, "bad_transition", ns_left=GY)


def test_incomplete_or_flash_command_refused(rig: Rig) -> None:
    with pytest.raises(SafetyViolation) as info:
        rig.env.command({"ns": G})
    assert info.value.rule == "bad_command"
    refused(rig, "bad_command", ns=Indication.FLASH)
    refused(rig, "bad_command", ped_ns=GY)


def test_link_loss_flashes_and_latches_until_operator_clears(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.link.down = True
    rig.clock.t += 0.1
    for _ in range(rig.ix.limits.link_failures):
        rig.env.check()
    assert rig.env.latched == "link_lost"
    flash = [r for r in rig.reports if r.point == "envelope.flash"]
    assert flash
    assert flash[-1].priority == Priority.ALARM
    assert flash[-1].value == "link_lost"
    assert flash[-1].meta is not None
    assert "3 consecutive failed exchanges" in flash[-1].meta["message"]
    rig.clock.t += 0.3
    rig.emu.poll()
    assert rig.emu.fault is None  # device watchdog 0.5 s not yet expired
    rig.clock.t += 0.2
    rig.emu.poll()
    assert rig.emu.fault == "watchdog"
    assert set(rig.emu.shown) == {0, 5}  # vehicle heads flash yellow, pedestrian heads dark
    rig.link.down = False
    refused(rig, "flash_latched")
    rig.env.clear("operator:test")
    assert rig.env.latched is None
    assert rig.emu.fault is None
    assert set(rig.env.shown().values()) == {R}
    rig.hold(2.5)
    refused(rig, "ped_clearance", ew=G)  # after a flash every crosswalk may be occupied


def test_stale_readback_flashes(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.link.stale = True
    rig.clock.t += 0.1
    rig.env.command(rig.state(ns=G, ped_ns=Y, ns_left=GY))
    assert rig.env.latched == "stale_readback"


def test_readback_mismatch_flashes(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.emu.shown[0] = 2  # a stuck relay: ns shows yellow
    rig.env.check()
    assert rig.env.latched == "readback_mismatch"


def test_device_monitor_trip_flashes_envelope(rig: Rig) -> None:
    ns_green(rig, 8)
    codes = list(rig.emu.shown)
    codes[2] = 3  # ew green written straight to the controller, below the envelope
    rig.emu.write(rig.emu.seq + 1, 0, codes)
    assert rig.emu.fault is not None
    assert rig.emu.fault.split()[0] in ("conflict", "red_clearance")
    rig.env.check()
    assert rig.env.latched == "device_fault"


def test_silent_link_trips_watchdog(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.clock.t += 0.6
    rig.env.watchdog()
    assert rig.env.latched == "link_lost"


def test_latched_fault_is_not_cleared_by_start(rig: Rig) -> None:
    """start() leaves only the start-up flash; a real fault stays latched until an operator clears it."""
    ns_green(rig, 8)
    rig.link.down = True
    for _ in range(rig.ix.limits.link_failures):
        rig.env.check()
    rig.link.down = False
    with pytest.raises(SafetyViolation) as info:
        rig.env.start()
    assert info.value.rule == "flash_latched"
    assert rig.env.latched == "link_lost"
    refused(rig, "flash_latched", ns=G, ped_ns=G, ns_left=GY)


def test_silent_link_does_not_trip_before_its_timeout(rig: Rig) -> None:
    """The link watchdog waits ``link_timeout_s`` after the last good read-back, no less."""
    ns_green(rig, 8)
    timeout = rig.ix.limits.link_timeout_s
    rig.clock.t += timeout * 0.8
    rig.env.watchdog()
    assert rig.env.latched is None
    assert not [r for r in rig.reports if r.point == "envelope.flash"]
    rig.env.check()  # a good read-back restarts the wait
    rig.clock.t += timeout * 0.8
    rig.env.watchdog()
    assert rig.env.latched is None
    rig.clock.t += timeout * 0.3
    rig.env.watchdog()
    assert rig.env.latched == "link_lost"


def test_check_returns_what_the_controller_shows(rig: Rig) -> None:
    """The tick reads back the shown state through check(); it is what was commanded."""
    ns_green(rig, 8)
    shown = rig.env.check()
    assert shown is not None
    assert shown.fault is None
    assert shown.indications == rig.state(ns=G, ped_ns=G, ns_left=GY)
    rig.link.down = True
    assert rig.env.check() is None


def test_operator_clear_is_reported_with_the_operator(rig: Rig) -> None:
    """Clearing a latched flash is an event naming who cleared it; the start-up clear is not reported."""
    assert not [r for r in rig.reports if r.point == "envelope.cleared"]
    rig.link.down = True
    rig.env.check()
    rig.link.down = False
    rig.env.clear("operator:nguyen")
    cleared = [r for r in rig.reports if r.point == "envelope.cleared"]
    assert len(cleared) == 1
    assert cleared[0].value == "operator:nguyen"
    assert cleared[0].priority == Priority.EVENT
    assert cleared[0].device == rig.ix.name


def _four_way(conflicts: list[tuple[str, str]]) -> ConflictMatrix:
    ix = junction()
    groups = [g.model_copy(update={"name": n}) for n, g in zip("abcd", ix.groups[:4], strict=True)]
    return ConflictMatrix(ix.model_copy(update={"groups": groups, "conflicts": conflicts, "permissive": []}))


def test_conflicts_found_among_four_or_more_active_streams() -> None:
    """Every foe pair among the active streams is checked, not only neighbours in name order."""
    matrix = _four_way([("a", "c")])
    state = dict.fromkeys("abcd", G)
    assert matrix.conflicts_in(state) == [("a", "c")]
    matrix = _four_way([("b", "d"), ("a", "d")])
    assert sorted(matrix.conflicts_in(state)) == [("a", "d"), ("b", "d")]


@settings(deadline=None)  # a loaded 2-core CI box can take over 200 ms for one example
@given(
    pairs=st.sets(st.sampled_from(list(itertools.combinations("abcd", 2)))),
    shown=st.tuples(*[st.sampled_from([R, Y, G]) for _ in range(4)]),
)
def test_conflicts_in_matches_brute_force(pairs: set[tuple[str, str]], shown: tuple[Indication, ...]) -> None:
    """conflicts_in reports exactly the foe pairs that are both active (no permissive pairs here)."""
    matrix = _four_way(sorted(pairs))
    state = dict(zip("abcd", shown, strict=True))
    active = [n for n in "abcd" if state[n] != R]
    expected = {(a, b) for a, b in itertools.combinations(active, 2) if (a, b) in pairs}
    assert set(matrix.conflicts_in(state)) == expected


class LateWrites(DirectLink):
    """A line on which every other change of state lands late: such a write moves the simulated clock
    on by ``delay`` before the cabinet applies it (its monitor times the change from then)."""

    def __init__(self, emu: ControllerEmulator, clock: SimClock, delay: float) -> None:
        super().__init__(emu)
        self.clock = clock
        self.delay = delay
        self._codes: list[int] = []
        self._changes = 0

    def write_registers(self, address: int, values: list[int]) -> None:
        codes = values[2:]
        if codes != self._codes:
            self._codes = codes
            self._changes += 1
            if self._changes % 2:
                self.clock.t = round(self.clock.t + self.delay, 6)
        super().write_registers(address, values)


@pytest.mark.parametrize("mode", ["fixed", "actuated"])
def test_late_writes_never_shorten_an_interval_the_cabinet_times(mode: str) -> None:
    """Writes landing 0.3 s late, then on time: the cabinet's monitor, programmed at the plan's exact
    minimums, sees no short green, yellow or clearance, and the controller is held, never refused.
    Timing a change from the tick that asked for it (before its write) trips the card here."""
    ix = junction()
    clock = SimClock(0.0)
    emu = ControllerEmulator(program_card(ix), clock, watchdog_s=1.0)
    out = ModbusSignalController(tuple(g.name for g in ix.groups), LateWrites(emu, clock, 0.3))
    inter = Intersection(ix, out, clock, mode=mode)  # type: ignore[arg-type]
    inter.start()
    seen = set()
    end = clock.t + 300
    while clock.t < end:
        clock.t = round(clock.t + 0.1, 6)
        inter.tick()
        assert emu.monitor.faults == [], emu.monitor.faults
        assert inter.envelope.latched is None, inter.envelope.latched
        seen.add(inter.controller.current.name)
    assert inter.envelope.refusals == {}
    assert inter.envelope.held > 0  # the late writes really cut into intervals timed at their minimum
    assert len(seen) >= 2


# ---- what the envelope reports, its boundaries and its link bookkeeping ------------------------


class LostAnswers:
    """Wraps the rig's link: the next ``n`` read-backs are lost on the line after the write landed."""

    def __init__(self, rig: Rig) -> None:
        self.n = 0
        self._read = rig.link.read_input_registers
        rig.link.read_input_registers = self  # type: ignore[method-assign]

    def __call__(self, address: int, count: int) -> list[int]:
        if self.n > 0:
            self.n -= 1
            raise TransportError("injected lost answer")
        return self._read(address, count)


class SlowWrites:
    """Wraps the rig's link: each state write lands ``delay`` seconds late (the clock moves on first)."""

    def __init__(self, rig: Rig) -> None:
        self.delay = 0.0
        self._clock = rig.clock
        self._write = rig.link.write_registers
        rig.link.write_registers = self  # type: ignore[method-assign]

    def __call__(self, address: int, values: list[int]) -> None:
        self._clock.t = round(self._clock.t + self.delay, 6)
        self._write(address, values)


def alarms(rig: Rig, point: str = "envelope.flash") -> list[tuple[str, str]]:
    return [(r.value, (r.meta or {}).get("message", "")) for r in rig.reports if r.point == point]


def test_a_change_whose_answers_were_lost_is_confirmed_by_the_next_read_back(rig: Rig) -> None:
    """Both tries of a write land but their answers are lost: the tick's read-back shows the new
    state under the last sequence number, which is what was written, so nothing flashes."""
    lost = LostAnswers(rig)
    rig.go(8, ns=G, ped_ns=G, ns_left=GY)
    rig.clock.t += 0.1
    lost.n = 2
    rig.env.command(rig.state(ns=G, ped_ns=Y, ns_left=GY))
    assert rig.env.link_errors == 2
    at = rig.clock.t
    rig.clock.t += 0.1
    assert rig.env.check() is not None
    assert rig.env.latched is None, alarms(rig)
    assert rig.env.shown()["ped_ns"] == Y
    assert rig.env.elapsed("ped_ns") == pytest.approx(0.0)  # timed from the read-back that showed it
    rig.clock.t += 0.1
    assert rig.env.check() is not None  # and again, before the next write: still what was written
    assert rig.env.latched is None, alarms(rig)
    rig.clock.t = at + 5
    assert rig.env.elapsed("ped_ns") == pytest.approx(4.9)


def test_a_refusal_is_counted_and_reported_with_its_message(rig: Rig) -> None:
    ns_green(rig, 2)
    first = refused(rig, "min_green", ns=Y, ped_ns=G, ns_left=GY)
    refused(rig, "min_green", ns=Y, ped_ns=G, ns_left=GY)
    assert rig.env.refusals == {"min_green": 2}
    report = rig.reports[-1]
    assert report.device == rig.ix.name
    assert report.priority == Priority.EVENT
    assert report.meta == {"message": str(first)}
    assert str(first) == "min_green: ns: green 2.0 s < 5.0 s"


def test_commands_while_flashing_are_refused_counted_and_reported(rig: Rig) -> None:
    rig.env.latch("link_lost", "test")
    for _ in range(2):
        with pytest.raises(SafetyViolation) as info:
            rig.env.command(rig.state())
    assert info.value.rule == "flash_latched"
    assert rig.env.refusals == {"flash_latched": 2}
    msg = "the junction is flashing (link_lost); an operator must clear it"
    assert str(info.value) == f"flash_latched: {msg}"
    assert rig.reports[-1].point == "envelope.refused"
    assert rig.reports[-1].value == "flash_latched"
    assert rig.reports[-1].priority == Priority.EVENT
    assert rig.reports[-1].meta == {"message": msg}


def test_reports_carry_the_wall_clock_time() -> None:
    rig = Rig()
    env = SafetyEnvelope(rig.ix, rig.env._out, rig.clock, rig.reports.append, wall=lambda: 1.7e9)
    env.start()
    env.latch("internal_error", "boom")
    assert rig.reports[-1].ts == 1.7e9
    assert rig.reports[-1].point == "envelope.flash"


def test_a_latch_is_reported_once_and_keeps_its_first_reason(rig: Rig) -> None:
    rig.clock.t += 0.1
    rig.env.latch("device_fault", "first")
    at = rig.clock.t
    rig.clock.t += 0.2
    rig.env.latch("link_lost", "second")
    assert rig.env.latched == "device_fault"
    assert rig.env.flashes == 2  # the start-up flash, then this one
    assert rig.env.flashed_at == at
    assert alarms(rig) == [("device_fault", "first")]
    assert rig.reports[-1].priority == Priority.ALARM
    assert rig.emu.fault == "flash_requested"


def test_a_failed_flash_command_is_left_to_the_device_watchdog(rig: Rig) -> None:
    rig.link.down = True
    rig.env.latch("link_lost", "cut")  # the flash write fails too: no exception, still latched
    assert rig.env.latched == "link_lost"
    assert rig.emu.fault is None


def test_the_start_up_flash_is_not_an_alarm_and_start_refuses_other_latches() -> None:
    rig = Rig()
    assert alarms(rig) == []
    assert rig.env.flashes == 1
    assert alarms(rig, "envelope.cleared") == []
    rig.env.latch("device_fault", "x")
    with pytest.raises(SafetyViolation) as info:
        rig.env.start()
    assert str(info.value) == "flash_latched: ltt-ngt is latched (device_fault); an operator must clear it"


def test_an_operator_clear_is_an_event_naming_the_operator(rig: Rig) -> None:
    rig.env.latch("device_fault", "x")
    rig.env.clear("operator:lan")
    cleared = [r for r in rig.reports if r.point == "envelope.cleared"]
    assert [(r.value, r.priority, r.meta) for r in cleared] == [("operator:lan", Priority.EVENT, None)]


def test_after_a_clear_every_clearance_is_timed_from_the_reset(rig: Rig) -> None:
    rig.env.latch("device_fault", "x")
    rig.clock.t += 30
    rig.env.clear("operator:lan")
    rig.hold(1.0)
    refused(rig, "red_clearance", ew=G)
    rig.hold(1.0)
    refused(rig, "ped_clearance", ew=G)  # a crosswalk may be in use: 10.9 s from the reset
    rig.hold(9.0)
    rig.env.command(rig.state(ew=G))
    assert rig.env.shown()["ew"] == G


def test_elapsed_is_the_time_shown(rig: Rig) -> None:
    rig.go(2.5, ns=G)
    assert rig.env.elapsed("ns") == pytest.approx(2.5)
    assert rig.env.elapsed("ew") == pytest.approx(13.5)


def test_unknown_indication_code_in_a_read_back_flashes(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.emu.shown[0] = 9
    assert rig.env.check() is None
    assert rig.env.latched == "readback_invalid"
    [(_, message)] = alarms(rig)
    assert message.startswith("read-back is not a valid state: signal controller returned an unknown")


def test_unknown_indication_code_in_a_write_read_back_flashes(rig: Rig) -> None:
    read = rig.link.read_input_registers
    rig.link.read_input_registers = lambda a, n: [*read(a, n)[:3], 9, *read(a, n)[4:]]  # type: ignore[method-assign]
    rig.clock.t += 0.1
    rig.env.command(rig.state())
    assert rig.env.latched == "readback_invalid"
    assert alarms(rig)[0][1].startswith("read-back is not a valid state: ")


def test_failed_read_backs_name_their_cause_when_they_flash(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.link.down = True
    for _ in range(2):
        assert rig.env.check() is None
    assert rig.env.latched is None
    rig.env.check()
    assert alarms(rig) == [
        ("link_lost", "3 consecutive failed exchanges (limit 3); read-back failed: injected link loss")
    ]


def test_a_device_trip_seen_on_a_tick_names_the_device_fault(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.emu._trip("short_green ns", rig.clock.t)
    rig.env.check()
    assert alarms(rig) == [("device_fault", "the controller tripped on its own: short_green")]


def test_a_device_trip_seen_on_a_write_names_the_device_fault(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.emu._trip("conflict ns ew", rig.clock.t)
    rig.clock.t += 0.1
    rig.env.command(rig.state(ns=G, ped_ns=G, ns_left=GY))
    assert rig.env.latched == "device_fault"
    assert alarms(rig) == [("device_fault", "the controller tripped on its own: conflict")]


def test_the_watchdog_flashes_at_exactly_the_link_timeout(rig: Rig) -> None:
    rig.env.check()
    rig.clock.t += rig.ix.limits.link_timeout_s
    rig.env.watchdog()
    assert rig.env.latched == "link_lost"
    assert alarms(rig) == [
        ("link_lost", "no good read-back for 0.50 s (limit 0.5 s; 0 consecutive failures)")
    ]


def test_a_watchdog_after_a_flash_reports_nothing_more(rig: Rig) -> None:
    rig.env.latch("device_fault", "x")
    rig.clock.t += 5
    rig.env.watchdog()
    assert [a[0] for a in alarms(rig)] == ["device_fault"]


def test_stale_and_mismatched_read_backs_name_what_they_saw(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.link.stale = True
    rig.clock.t += 0.1
    rig.env.command(rig.state(ns=G, ped_ns=Y, ns_left=GY))
    seq = rig.env._seq
    assert alarms(rig) == [("stale_readback", f"read-back echoes command {seq - 1}, expected {seq}")]
    rig2 = Rig()
    rig2.go(11)
    rig2.emu.shown[0] = 2
    rig2.env.check()
    assert alarms(rig2) == [
        (
            "readback_mismatch",
            "shown ew=r ew_left=r ns=y ns_left=r ped_ew=r ped_ns=r but commanded "
            "ew=r ew_left=r ns=r ns_left=r ped_ew=r ped_ns=r",
        )
    ]


def test_push_button_calls_are_taken_once(rig: Rig) -> None:
    rig.emu.buttons = 2
    rig.env._out.buttons = 2
    rig.emu.press(1)
    rig.env.check()
    rig.emu.press(0)
    rig.clock.t += 0.1
    rig.env.command(rig.state())
    assert rig.env.take_calls() == [1, 0]
    assert rig.env.take_calls() == []


def test_the_sequence_number_wraps_at_sixteen_bits(rig: Rig) -> None:
    rig.env._seq = 0xFFFF
    rig.clock.t += 0.1
    rig.env.command(rig.state())
    assert rig.emu.seq == 0
    assert rig.env.latched is None


def test_refusals_name_the_groups_and_times_involved(rig: Rig) -> None:
    assert str(refused(rig, "conflict", ns=G, ew=G)) == "conflict: ew=G and ns=G conflict"
    rig.go(6, ns=G)
    rig.go(3.5, ns=Y)
    rig.go(1.0)
    assert str(refused(rig, "red_clearance", ew=G)) == "red_clearance: ew: foe ns red for 1.0 s < 2.0 s"
    rig2 = Rig()
    rig2.go(11)
    rig2.go(7, ped_ns=G)
    rig2.go(3, ped_ns=Y)
    rig2.go(2.5)
    e = refused(rig2, "ped_clearance", ew=G)
    assert str(e) == "ped_clearance: ew: crosswalk ped_ns walk ended 5.5 s ago < 10.9 s"


def test_a_foe_turning_red_in_the_same_command_gives_no_clearance(rig: Rig) -> None:
    rig.go(6, ns=G)
    rig.go(3.5, ns=Y)
    e = refused(rig, "red_clearance", ew=G)  # ns goes red now: its clearance has not begun
    assert str(e) == "red_clearance: ew: foe ns is not yet red"


def test_bad_commands_say_what_is_wrong(rig: Rig) -> None:
    with pytest.raises(SafetyViolation) as info:
        rig.env.command({**rig.state(), "bogus": R})
    assert str(info.value) == "bad_command: state must name every group (missing [], unknown ['bogus'])"
    state = rig.state()
    del state["ew"]
    with pytest.raises(SafetyViolation) as info:
        rig.env.command(state)
    assert str(info.value) == "bad_command: state must name every group (missing ['ew'], unknown [])"
    e = refused(rig, "bad_command", ns=Indication.FLASH)
    assert str(e).startswith("bad_command: ns: ")
    assert str(e).endswith("cannot be commanded (flash goes through flash())")
    assert (
        str(refused(rig, "bad_command", ped_ns=GY))
        == "bad_command: ped_ns: a pedestrian head has no permissive green"
    )


def test_yellow_may_run_to_exactly_its_maximum(rig: Rig) -> None:
    rig.go(6, ns=G)
    rig.go(6.0, ns=Y)
    rig.env.command(rig.state(ns=Y))
    assert rig.env.shown()["ns"] == Y
    rig.clock.t += 0.1
    e = refused(rig, "long_yellow", ns=Y)
    assert str(e) == "long_yellow: ns: yellow for 6.1 s > 6.0 s"


def test_flashing_dont_walk_has_no_maximum(rig: Rig) -> None:
    rig.go(7, ped_ns=G)
    rig.go(20, ped_ns=Y)
    rig.env.command(rig.state(ped_ns=Y))
    assert rig.env.shown()["ped_ns"] == Y


def test_min_green_and_clearances_pass_at_exactly_their_minimum(rig: Rig) -> None:
    rig.go(5.0, ns=G)
    rig.go(3.5, ns=Y)
    rig.go(2.0)
    rig.env.command(rig.state(ew=G))
    assert rig.env.shown()["ew"] == G
    rig.go(7.0, ew=G, ped_ns=R)
    rig2 = Rig()
    rig2.go(11)
    rig2.go(7.0, ped_ns=G)
    rig2.go(3.0, ped_ns=Y)
    rig2.env.command(rig2.state())
    assert rig2.env.shown()["ped_ns"] == R


def test_refused_timing_messages(rig: Rig) -> None:
    rig.go(6, ns=G)
    rig.go(1.0, ns=Y)
    assert str(refused(rig, "short_yellow")) == "short_yellow: ns: yellow 1.0 s < 3.5 s"
    rig2 = Rig()
    rig2.go(11)
    rig2.go(7, ped_ns=G)
    rig2.go(1, ped_ns=Y)
    assert str(refused(rig2, "ped_clearance")) == "ped_clearance: ped_ns: yellow 1.0 s < 3.0 s"
    rig3 = Rig()
    rig3.go(11)
    rig3.go(3, ped_ns=G)
    assert str(refused(rig3, "min_green", ped_ns=Y)) == "min_green: ped_ns: green 3.0 s < 7.0 s"


def test_permissive_then_protected_green_counts_its_minimum_from_the_permissive_start(rig: Rig) -> None:
    rig.go(3, ns_left=GY)
    rig.go(2, ns_left=G)
    rig.env.command(rig.state(ns_left=Y))
    assert rig.env.shown()["ns_left"] == Y


def test_a_yielding_stream_may_start_permissive_beside_the_stream_it_yields_to(rig: Rig) -> None:
    rig.go(6, ns=G)
    rig.env.command(rig.state(ns=G, ns_left=GY))
    assert rig.env.shown()["ns_left"] == GY
    rig.go(6, ns=Y, ns_left=GY)  # ns yellow, the left still permissive
    refused(rig, "conflict", ns=Y, ns_left=G)  # protected only after ns has cleared


def test_the_stream_yielded_to_may_start_beside_a_permissive_green(rig: Rig) -> None:
    rig.go(6, ns_left=GY)
    rig.env.command(rig.state(ns=G, ns_left=GY))
    assert rig.env.shown()["ns"] == G


def test_the_stream_yielded_to_may_not_start_beside_a_protected_green(rig: Rig) -> None:
    rig.go(6, ns_left=G)
    refused(rig, "conflict", ns=G, ns_left=G)


def late_yellow(rig: Rig, delay: float = 0.3) -> SlowWrites:
    """ns green, then its yellow write lands ``delay`` late."""
    slow = SlowWrites(rig)
    rig.go(6, ns=G)
    slow.delay = delay
    rig.clock.t += 0.1
    rig.env.command(rig.state(ns=Y))
    slow.delay = 0.0
    return slow


def test_a_late_change_holds_the_next_one_by_its_lateness_only(rig: Rig) -> None:
    late_yellow(rig)
    rig.hold(3.2)  # the controller's yellow is over by its own clock, 0.3 s short at the cabinet
    rig.env.command(rig.state())
    assert rig.env.held == 1
    assert rig.env.shown()["ns"] == Y
    assert rig.env.refusals == {}
    rig.clock.t = round(rig.clock.t + 0.1, 6)
    rig.env.command(rig.state())
    assert rig.env.held == 2
    rig.env.watchdog()  # a hold is a good exchange too
    assert rig.env.latched is None
    rig.clock.t = round(rig.clock.t + 0.2, 6)
    rig.env.command(rig.state())
    assert rig.env.shown()["ns"] == R
    assert rig.emu.monitor.faults == []


def test_a_shortfall_beyond_the_lateness_is_refused(rig: Rig) -> None:
    late_yellow(rig)
    rig.hold(2.8)
    refused(rig, "short_yellow")
    assert rig.env.held == 0


def test_lateness_never_excuses_a_conflict(rig: Rig) -> None:
    late_yellow(rig)
    rig.clock.t += 1.0
    refused(rig, "conflict", ns=Y, ew=G)
    assert rig.env.held == 0


def test_lateness_is_forgotten_after_the_hold_window(rig: Rig) -> None:
    slow = SlowWrites(rig)
    slow.delay = 0.3
    rig.clock.t += 0.1
    rig.env.command(rig.state(ns=G))
    slow.delay = 0.0
    rig.hold(301, rig.state(ns=G), dt=0.4)
    rig.env.command(rig.state(ns=Y))
    rig.clock.t = round(rig.clock.t + 3.3, 6)
    refused(rig, "short_yellow")
    assert rig.env.held == 0


def test_a_held_change_is_late_from_when_it_was_first_asked_for(rig: Rig) -> None:
    """Ticks of 0.2 s: the red asked for at 3.2 s of a yellow that landed 0.3 s late is held twice and
    shown 0.4 s after the controller asked; the green after it is held for that 0.4 s, not refused."""
    late_yellow(rig)
    rig.hold(3.2)
    for _ in range(3):
        rig.env.command(rig.state())
        rig.clock.t = round(rig.clock.t + 0.2, 6)
    assert rig.env.shown()["ns"] == R
    assert rig.env.held == 2
    rig.hold(1.4, rig.state())  # 2.0 s of red clearance since the controller asked for red
    rig.env.command(rig.state(ew=G))
    assert rig.env.refusals == {}
    assert rig.env.held == 3
    assert rig.env.shown()["ew"] == R


def test_a_link_silent_in_real_time_flashes_without_another_exchange() -> None:
    """The real-time bound: after a failure, once ``link_timeout_s`` has passed since the last good
    exchange, the next check flashes at once instead of blocking in another exchange."""
    data = junction().model_dump(by_alias=True, exclude_none=True)
    data["limits"] = {**data.get("limits", {}), "link_timeout_s": 0.1, "link_failures": 10}
    rig = Rig(IntersectionConfig.model_validate(data))
    rig.go(11)
    rig.link.down = True
    rig.env.check()
    assert rig.env.latched is None
    time.sleep(0.15)
    assert rig.env.check() is None
    assert rig.env.latched == "link_lost"
    assert rig.env.link_errors == 1
    [(reason, message)] = alarms(rig)
    assert reason == "link_lost"
    assert re.fullmatch(r"no good read-back for 0\.\d\d s \(limit 0\.1 s; 1 consecutive failures\)", message)


def test_transition_refusals_say_what_was_asked(rig: Rig) -> None:
    ns_green(rig)
    assert (
        str(refused(rig, "no_yellow", ns=R, ped_ns=G, ns_left=GY)) == "no_yellow: ns: green straight to red"
    )
    rig2 = Rig()
    rig2.go(11)
    assert str(refused(rig2, "bad_transition", ns=Y)) == "bad_transition: ns: yellow follows green only"
    rig2.go(6, ns_left=G)
    e = refused(rig2, "bad_transition", ns_left=GY)
    assert str(e) == "bad_transition: ns_left: protected green cannot drop to permissive without yellow"
    rig2.go(6, ns_left=Y)
    e = refused(rig2, "yellow_to_green", ns_left=G)
    assert str(e) == "yellow_to_green: ns_left: yellow cannot return to green"


def crosswalk_cleared(rig: Rig) -> float:
    """ped_ns walks, clears and turns red; returns when its walk ended (its crossing runs from there)."""
    rig.go(7, ped_ns=G)
    walk_end = rig.clock.t
    rig.go(3, ped_ns=Y)
    rig.hold(5.0, rig.state())
    return walk_end


def test_a_green_across_a_crosswalk_waits_its_whole_crossing(rig: Rig) -> None:
    """10.0 s after the walk is less than the 10.9 s crossing (12 m at 1.1 m/s), however close."""
    walk_end = crosswalk_cleared(rig)
    rig.hold(round(walk_end + 10.0 - rig.clock.t, 6), rig.state())
    refused(rig, "ped_clearance", ew=G)


def test_a_green_across_a_crosswalk_may_start_at_exactly_its_crossing_time(rig: Rig) -> None:
    walk_end = crosswalk_cleared(rig)
    crossing = 12 / rig.ix.limits.ped_speed_mps
    rig.hold(round(walk_end + crossing - 0.05 - rig.clock.t, 6), rig.state())
    rig.clock.t = walk_end + crossing
    rig.env.command(rig.state(ew=G))
    assert rig.env.shown()["ew"] == G


def test_a_change_retried_after_a_slow_lost_frame_is_timed_from_the_retry() -> None:
    """The first write of a change blocks 0.2 s (real time) and is lost; the retry lands. The change
    is timed from the retry, so the controller's next change on its own schedule is held, not shown
    early."""
    rig = Rig()
    rig.go(11)
    write = rig.link.write_registers
    slow = {"n": 0}

    def lossy(address: int, values: list[int]) -> None:
        if slow["n"]:
            slow["n"] -= 1
            time.sleep(0.2)
            raise TransportError("injected slow lost frame")
        write(address, values)

    rig.link.write_registers = lossy  # type: ignore[method-assign]
    rig.go(6, ns=G)
    slow["n"] = 1
    rig.clock.t += 0.1
    rig.env.command(rig.state(ns=Y))
    assert rig.env.shown()["ns"] == Y
    rig.hold(3.5 - 0.1)
    rig.clock.t = round(rig.clock.t + 0.1, 6)
    rig.env.command(rig.state())
    assert rig.env.held == 1
    assert rig.env.shown()["ns"] == Y


def test_the_link_watchdog_runs_from_a_clear(rig: Rig) -> None:
    """The all-red write of a clear is a good exchange: the watchdog times the link from it."""
    rig.env.latch("device_fault", "x")
    rig.clock.t += 5
    rig.env.clear("operator:lan")
    rig.clock.t += rig.ix.limits.link_timeout_s / 2
    rig.env.watchdog()
    assert rig.env.latched is None


def test_a_change_is_timed_by_the_confirm_clock(rig: Rig) -> None:
    """The intersection's thread judges with a clock read once per step; its read-backs are stamped
    with a clock that moved during the exchange (here 0.3 s on), so the change counts from there."""
    real = SimClock(rig.clock.t)
    rig.env.confirm_clock = real
    rig.clock.t += 0.1
    real.t = rig.clock.t + 0.3
    rig.env.command(rig.state(ns=G))
    assert rig.env.elapsed("ns") == pytest.approx(-0.3)


def test_a_change_a_fraction_short_of_its_minimum_is_refused(rig: Rig) -> None:
    """0.4 s short of min green (5 s) and min walk (7 s): a rule that allowed even a second less fails."""
    rig.go(4.6, ns=G, ped_ns=G)
    refused(rig, "min_green", ns=Y, ped_ns=G)
    rig.go(2.0, ns=G, ped_ns=G)  # 6.6 s of walk
    refused(rig, "min_green", ns=G, ped_ns=Y)


class _CountsFlashes:
    """An output that only counts flash commands: what a new envelope commands before anything else."""

    def __init__(self) -> None:
        self.flashes = 0

    def flash(self) -> None:
        self.flashes += 1


def test_a_new_envelope_flashes_the_output_unless_its_owner_defers_it() -> None:
    out = _CountsFlashes()
    env = SafetyEnvelope(junction(), out, SimClock())  # type: ignore[arg-type]
    assert (out.flashes, env.latched) == (1, "startup")
    deferred = _CountsFlashes()
    env = SafetyEnvelope(junction(), deferred, SimClock(), defer_flash=True)  # type: ignore[arg-type]
    assert (deferred.flashes, env.latched) == (0, "startup")


def test_failed_writes_name_their_cause_when_they_flash(rig: Rig) -> None:
    ns_green(rig, 8)
    rig.link.down = True
    rig.env.command(rig.state(ns=Y, ped_ns=G, ns_left=GY))  # written twice, both lost
    assert rig.env.latched is None
    rig.env.command(rig.state(ns=Y, ped_ns=G, ns_left=GY))
    assert alarms(rig) == [
        ("link_lost", "3 consecutive failed exchanges (limit 3); write failed: injected link loss")
    ]


class LoseStateWrites:
    """Wraps a link: the next ``n`` state writes (not resets or flashes) are lost on the line, each
    after ``stall`` seconds of real time (a frame that times out)."""

    def __init__(self, link: DirectLink, stall: float = 0.0) -> None:
        self.n = 0
        self.stall = stall
        self._write = link.write_registers
        link.write_registers = self  # type: ignore[method-assign]

    def __call__(self, address: int, values: list[int]) -> None:
        if self.n > 0 and values[1] == CONTROL_RUN:
            self.n -= 1
            time.sleep(self.stall)
            raise TransportError("injected lost state write")
        self._write(address, values)


def test_a_state_write_lost_right_after_start_counts_once_and_is_retried() -> None:
    """start() resets the device, then writes all red; that first write is lost on the line. The
    retry in the same call shows all red; the loss counts once against the link policy (with a
    limit of two it does not flash), and the next loss starts the count again."""
    data = junction().model_dump(by_alias=True, exclude_none=True)
    data["limits"] = {**data.get("limits", {}), "link_failures": 2}
    ix = IntersectionConfig.model_validate(data)
    clock = SimClock()
    emu = ControllerEmulator(program_card(ix), clock, watchdog_s=0.5)
    link = FaultyLink(emu)
    lose = LoseStateWrites(link)
    reports: list = []
    env = SafetyEnvelope(ix, ModbusSignalController(tuple(g.name for g in ix.groups), link), clock, reports.append)
    lose.n = 1
    env.start()
    assert env.latched is None, [r.meta for r in reports]
    assert env.link_errors == 1
    assert set(env.shown().values()) == {R}
    assert emu.fault is None
    clock.t += 0.1
    lose.n = 1
    env.command(env.shown())  # one more loss, after the good retry: one in a row, no flash
    assert env.latched is None, [r.meta for r in reports]
    assert env.link_errors == 2


def test_a_lost_repeat_write_is_not_a_late_change(rig: Rig) -> None:
    """A write that repeats what is shown is lost and retried after a stall: nothing changed late,
    so a later change asked too early is refused, not held for the retry's delay (holding would
    count a delay that never reached the device)."""
    lose = LoseStateWrites(rig.link, stall=0.05)
    rig.go(2, ns=G, ns_left=GY)
    lose.n = 1
    rig.clock.t += 0.1
    rig.env.command(rig.state(ns=G, ns_left=GY))  # the same state: lost, then written again
    assert rig.env.link_errors == 1
    assert rig.env.latched is None
    rig.hold(rig.ix.limits.min_green_s - 2.1 - 0.1)
    rig.clock.t = round(rig.clock.t + 0.09, 6)  # 0.01 s before the minimum green is served
    refused(rig, "min_green", ns=Y, ns_left=GY)
    assert rig.env.held == 0
