"""Each envelope rule refuses a violating command; faults flash the junction and latch."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.traffic.card import program_card
from control.traffic.config import ite_yellow_s
from control.traffic.envelope import ConflictMatrix
from control.traffic.runner import Intersection
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.indications import Indication
from drivers.signals.modbus import ModbusSignalController
from kernel.errors import SafetyViolation, TransportError
from kernel.readings import Priority
from tests.traffic.helpers import GY, G, R, Rig, SimClock, Y, junction


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
