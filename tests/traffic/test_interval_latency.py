"""What a write latency does to the intervals the cabinet sees, as the agent runs a junction.

The intersection's thread judges each step with one clock reading (the tick, on a 0.1 s grid) and
the envelope times every change from its confirmed read-back (``confirm_clock``, real time, a
little after the tick once the Modbus exchange is done). With writes that take ``LATENCY_S``, every
minimum interval (yellow, all-red, walk) is shown for its minimum plus at most one tick: never
shorter, and the extra tick does not accumulate from one interval to the next.
"""

from __future__ import annotations

from collections import defaultdict

from control.traffic.card import program_card
from control.traffic.runner import Intersection
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.modbus import ModbusSignalController
from tests.traffic.helpers import SimClock, junction

TICK_S = 0.1
LATENCY_S = 0.02


class SlowLine(DirectLink):
    """Each state write takes ``delay`` of real time before the cabinet applies it."""

    def __init__(self, emu: ControllerEmulator, real: SimClock, delay: float) -> None:
        super().__init__(emu)
        self.real = real
        self.delay = delay

    def write_registers(self, address: int, values: list[int]) -> None:
        self.real.t = round(self.real.t + self.delay, 6)
        super().write_registers(address, values)


def _shown_intervals(seconds: float) -> tuple[dict[str, list[float]], Intersection, ControllerEmulator]:
    """Run the test junction (actuated, no vehicles: every stage at its minimum) and collect how
    long each indication was shown, as the envelope confirmed it; plus all-red between stages."""
    ix = junction()
    real, step = SimClock(0.0), SimClock(0.0)
    emu = ControllerEmulator(program_card(ix), real, watchdog_s=1.0)
    out = ModbusSignalController(tuple(g.name for g in ix.groups), SlowLine(emu, real, LATENCY_S))
    inter = Intersection(ix, out, step, mode="actuated")
    inter.envelope.confirm_clock = real  # as TrafficSource does with time.monotonic
    inter.start()
    timers = inter.envelope._timers
    prev = {n: (t.shown, t.since) for n, t in timers.items()}
    kind = {g.name: g.kind for g in ix.groups}
    lengths: dict[str, list[float]] = defaultdict(list)
    last_red: float | None = None
    for k in range(1, round(seconds / TICK_S) + 1):
        real.t = step.t = round(k * TICK_S, 6)
        inter.tick()
        assert inter.envelope.latched is None, inter.envelope.latched
        for n, t in timers.items():
            was, since = prev[n]
            if t.shown == was:
                continue
            lengths[f"{kind[n]}:{was.value}"].append(t.since - since)
            if kind[n] == "vehicle" and was.value == "y":
                last_red = t.since
            if kind[n] == "vehicle" and was.value == "r" and last_red is not None:
                lengths["all_red"].append(t.since - last_red)
                last_red = None
            prev[n] = (t.shown, t.since)
    return lengths, inter, emu


def test_a_write_latency_lengthens_each_minimum_interval_by_at_most_one_tick() -> None:
    lengths, inter, emu = _shown_intervals(600)
    lim = inter.ix.limits
    for name, minimum in (
        ("vehicle:y", lim.yellow),
        ("all_red", lim.red_clearance_s),
        ("pedestrian:G", lim.min_walk_s),
    ):
        seen = lengths[name]
        assert len(seen) >= 20, (name, seen)
        assert min(seen) >= minimum - 1e-9, (name, min(seen))  # never shorter (the monitor agrees)
        assert max(seen) <= minimum + TICK_S + 1e-6, (name, max(seen))  # one tick more at most
    assert emu.monitor.faults == []
    assert inter.envelope.refusals == {}
