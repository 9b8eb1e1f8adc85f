"""Loop counts as telemetry: each loop's vehicles per period, for the centre's corridor plan.

Every ``counts_s`` seconds (on the monotonic clock) an intersection reports, per loop detector, the
vehicles it counted in that period as the reading ``detector.<loop>.count`` (device: the
intersection, unit ``veh``, ``meta.period_s``: the seconds it covers). The receiver stores them
like any reading; ``edge-agent centre coordinate`` sums them over a window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from kernel.readings import Reading

POINT = "detector.{}.count"
POINT_PREFIX, POINT_SUFFIX = "detector.", ".count"


def loop_of(point: str) -> str | None:
    """The loop a count point belongs to (``detector.L1.count`` -> ``L1``), else None."""
    if point.startswith(POINT_PREFIX) and point.endswith(POINT_SUFFIX):
        name = point[len(POINT_PREFIX) : -len(POINT_SUFFIX)]
        return name or None
    return None


class CountReporter:
    """Turns a board's cumulative actuations into one reading per loop every ``period_s``."""

    def __init__(
        self, device: str, period_s: float, now_mono: float, wall: Callable[[], float] = time.time
    ) -> None:
        self.device = device
        self.period_s = period_s
        self._since = now_mono
        self._before: dict[str, int] = {}
        self._wall = wall

    def poll(self, now_mono: float, actuations: Mapping[str, int]) -> list[Reading]:
        """The period's counts when it is over (an empty list before)."""
        if now_mono - self._since < self.period_s:
            return []
        covered = now_mono - self._since
        self._since = now_mono
        ts = self._wall()
        out = []
        for loop, total in sorted(actuations.items()):
            n = total - self._before.get(loop, 0)
            value = n if n >= 0 else total  # a new board (cleared flash) starts from zero
            meta = {"period_s": f"{covered:.1f}"}
            out.append(Reading(self.device, POINT.format(loop), value, ts, unit="veh", meta=meta))
        self._before = dict(actuations)
        return out
