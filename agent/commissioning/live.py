"""What the page and the commissioning checks see of a running site: the last value of every point
and a short history, recorded on the way to the store (a sink that forwards everything)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from kernel.readings import Reading
from kernel.sink import ReadingSink

HISTORY = 240  # samples kept per point (a few minutes at the usual poll rates)
MAX_POINTS = 2000  # points tracked; beyond this new points are not charted


class LiveTap:
    """A :class:`ReadingSink` that remembers the last readings and forwards them to ``inner``."""

    def __init__(self, inner: ReadingSink | None = None, history: int = HISTORY) -> None:
        self.inner = inner
        self.history = history
        self.last: dict[tuple[str, str], Reading] = {}
        self.series: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        self.last_seen: dict[str, float] = {}  # device -> monotonic time of its last reading
        self.counts: dict[str, int] = {}

    async def put(self, readings: Sequence[Reading]) -> None:
        """Record, then forward (backpressure comes from the inner sink)."""
        self.record(readings)
        if self.inner is not None:
            await self.inner.put(readings)

    def record(self, readings: Sequence[Reading]) -> None:
        """Remember ``readings``."""
        now = time.monotonic()
        for r in readings:
            key = (r.device, r.point)
            if key not in self.last and len(self.last) >= MAX_POINTS:
                continue
            self.last[key] = r
            self.last_seen[r.device] = now
            self.counts[r.device] = self.counts.get(r.device, 0) + 1
            if isinstance(r.value, (int, float)) and not isinstance(r.value, bool):
                series = self.series.get(key)
                if series is None:
                    series = self.series[key] = deque(maxlen=self.history)
                series.append((r.ts, float(r.value)))

    def device_points(self, device: str) -> list[Reading]:
        """The last reading of each point of ``device``, by point name."""
        return sorted((r for (d, _), r in self.last.items() if d == device), key=lambda r: r.point)

    def age_s(self, device: str) -> float | None:
        """Seconds since ``device`` last delivered a reading (None if never)."""
        seen = self.last_seen.get(device)
        return None if seen is None else time.monotonic() - seen
