"""Acquisition pace: sample more slowly while the uplink cannot keep up, so the site delivers at its
ceiling instead of spending its CPU on readings it cannot ship.

Past the site's ceiling, polling flat out takes the CPU the uplink needs: the store's backlog grows
and fewer readings reach the centre than at the ceiling (the collapse measured in issue 13). The
agent looks every few seconds at how long the backlog would take to drain at the rate the centre
acknowledges; while that stays above ``high_s`` and the backlog is not shrinking, the sources
stretch their poll periods (by 25 % a step, up to ``max_stretch``); below ``low_s``, or while the
backlog shrinks, they come back (by 10 % a step), so what is taken in settles at what leaves. A poll moved later by
the stretch counts as skipped, never queued. An uplink that is down, or a centre that acknowledges
(almost) nothing, is an outage, not an overload: the stretch returns to 1 and the store buffers,
as it must. So is a slow centre while the agent has CPU to spare (its event loop answers on time):
only a starved agent stretches.
"""

from __future__ import annotations

from dataclasses import dataclass

UP, DOWN = 1.25, 1.1
OUTAGE_SHARE = 0.1  # acknowledged below this share of what is accepted: the centre is not answering
DRAINING = 1.1  # acknowledged this much faster than accepted: the backlog shrinks, poll more
STARVED_LAG_S = 0.01  # the event loop runs timers this late on average: the agent lacks CPU


@dataclass
class Pace:
    """The stretch every source applies to its poll periods (1: as configured)."""

    high_s: float = 10.0
    low_s: float = 3.0
    max_stretch: float = 16.0
    stretch: float = 1.0
    smoothing: float = 0.3  # weight of the newest step in the rates (acks arrive in bursts)
    _accepted: float | None = None
    _delivered: float | None = None

    def update(
        self, backlog: int, accepted_per_s: float, delivered_per_s: float, connected: bool, loop_lag_s: float
    ) -> float:
        """One control step from the backlog, the rates accepted into the store and acknowledged
        lately, and how late the event loop ran a timer (mean)."""
        a = self.smoothing
        acc = accepted_per_s if self._accepted is None else a * accepted_per_s + (1 - a) * self._accepted
        dlv = delivered_per_s if self._delivered is None else a * delivered_per_s + (1 - a) * self._delivered
        self._accepted, self._delivered = acc, dlv
        if not connected or dlv < OUTAGE_SHARE * acc or dlv <= 0:
            self.stretch = 1.0
            return self.stretch
        drain_s = backlog / dlv
        if drain_s > self.high_s and loop_lag_s >= STARVED_LAG_S and acc >= dlv:
            self.stretch = min(self.stretch * UP, self.max_stretch)
        elif drain_s < self.low_s or dlv > DRAINING * acc:
            # Caught up, or the backlog shrinks: poll more, until what is taken in matches what leaves.
            self.stretch = max(self.stretch / DOWN, 1.0)
        return self.stretch
