"""Acquisition pace: sample more slowly while the uplink cannot keep up, so the site delivers at its
ceiling instead of spending its CPU on readings it cannot ship.

Past the site's ceiling, polling flat out takes the CPU the uplink needs: the store's backlog grows
and fewer readings reach the centre than at the ceiling (the collapse measured in issue 13). The
agent looks every few seconds at the backlog and at the rates accepted into the store and
acknowledged by the centre. While the agent is starved and the backlog is either large (above
``high_s`` of deliveries, and not shrinking) or keeps growing (accepted faster than acknowledged
for ``growing_steps`` steps in a row, above ``low_s`` of deliveries), the sources stretch their
poll periods (by 25 % a step, up to ``max_stretch``). Once caught up (below ``low_s`` and not
growing while starved) they come back by 10 % a step, and while the backlog shrinks by as much as
it shrinks (up to 25 % a step), so what is taken in settles at what leaves. A step stretched for a
growing backlog is left to show in the rates before the next. A poll moved later by the stretch
counts as skipped, never queued.

Starved means short of CPU: the event loop runs its timers late (``STARVED_LAG_S``: the agent's own
core is full), or the agent's threads wait for a core (``STARVED_WAIT``: a machine shared with
other busy processes, where the loop's timers can stay on time while the threads queue; read from
schedstat by :mod:`kernel.cpuwait`). An uplink that is down, or a centre that acknowledges (almost)
nothing, is an outage, not an overload: the stretch returns to 1 and the store buffers, as it must.
So is a slow centre while the agent has CPU to spare: only a starved agent stretches.
"""

from __future__ import annotations

from dataclasses import dataclass

UP, DOWN = 1.25, 1.1
OUTAGE_SHARE = 0.1  # acknowledged below this share of what is accepted: the centre is not answering
DRAINING = 1.1  # acknowledged this much faster than accepted: the backlog shrinks, poll more
# Accepted this much faster than acknowledged: the backlog grows. Measured at load 3-4 (17:52 UTC
# run in docs/benchmarks.md): +2 % at the ceiling, +9 % and +4 % offered 1.5x and 3x that.
GROWING = 1.03
STARVED_LAG_S = 0.01  # the event loop runs timers this late on average: the agent lacks CPU
# The agent's threads waited this many seconds per second for a core (summed over threads). Measured
# with bench/bench_ladder.py on a 2-core machine: 0.13 for a light agent (100 devices, 7 % of a core,
# load 5.5), 0.74 to 1.78 in every row at or past the ceiling (load 3 to 13; docs/benchmarks.md). A
# busy agent that keeps up can pass it too (0.75 at 400 devices, load 6.1): starvation alone never
# stretches, the backlog must also be large or growing.
STARVED_WAIT = 0.5


@dataclass
class Pace:
    """The stretch every source applies to its poll periods (1: as configured)."""

    high_s: float = 10.0
    low_s: float = 3.0
    max_stretch: float = 16.0
    growing_steps: int = 3
    stretch: float = 1.0
    smoothing: float = 0.3  # weight of the newest step in the rates (acks arrive in bursts)
    _accepted: float | None = None
    _delivered: float | None = None
    _growing: int = 0  # steps in a row with the (smoothed) backlog growing

    def update(
        self,
        backlog: int,
        accepted_per_s: float,
        delivered_per_s: float,
        connected: bool,
        loop_lag_s: float,
        cpu_wait: float | None = None,
    ) -> float:
        """One control step from the backlog, the rates accepted into the store and acknowledged
        lately, how late the event loop ran a timer (mean), and the seconds per second the agent's
        threads waited for a core (None where the system does not say)."""
        a = self.smoothing
        acc = accepted_per_s if self._accepted is None else a * accepted_per_s + (1 - a) * self._accepted
        dlv = delivered_per_s if self._delivered is None else a * delivered_per_s + (1 - a) * self._delivered
        self._accepted, self._delivered = acc, dlv
        if not connected or dlv < OUTAGE_SHARE * acc or dlv <= 0:
            self.stretch, self._growing = 1.0, 0
            return self.stretch
        self._growing = self._growing + 1 if acc > GROWING * dlv else 0
        starved = loop_lag_s >= STARVED_LAG_S or (cpu_wait is not None and cpu_wait >= STARVED_WAIT)
        drain_s = backlog / dlv
        large = drain_s > self.high_s and acc >= dlv
        growing = drain_s > self.low_s and self._growing >= self.growing_steps
        if starved and (large or growing):
            self.stretch = min(self.stretch * UP, self.max_stretch)
            if not large:
                # Let the step show in the (smoothed) rates before the next one: stretching again at
                # every step while they lag overshoots, and polls relaxed later are readings lost.
                self._growing = 0
        elif dlv > DRAINING * acc:
            # The backlog shrinks: poll more, by as much as it shrinks (at most 25 % a step), until what
            # is taken in matches what leaves.
            self.stretch = max(self.stretch / min(dlv / acc if acc > 0 else UP, UP), 1.0)
        elif drain_s < self.low_s and not (starved and acc >= dlv):
            # Caught up: poll more, gently, while the agent has CPU to spare or the backlog still shrinks.
            self.stretch = max(self.stretch / DOWN, 1.0)
        return self.stretch
