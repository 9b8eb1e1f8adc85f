"""Recent readings of named points, kept in memory, and their resampling to hourly and daily series.

The farm models look back 72 hours (faults) and 7 days (irrigation). :class:`ReadingHistory` keeps a
bounded window of every point it is asked to watch; :class:`HistoryTee` is a sink in front of the
site's writer that copies the watched readings into it, so the farm source sees what the Modbus or
serial sources acquire without any change to them. Readings of BAD quality are kept as missing (NaN).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kernel.readings import Quality, Reading
from kernel.sink import ReadingSink

FloatArray = npt.NDArray[np.float64]
PointKey = tuple[str, str]


class SeriesReader(Protocol):
    """Anything that returns the readings of one point between two times."""

    def series(self, device: str, point: str, start: float, end: float) -> tuple[FloatArray, FloatArray]:
        """Timestamps and values (NaN for missing or bad) with ``start <= ts < end``, in time order."""
        ...


class ReadingHistory:
    """Bounded per-point history of numeric readings (oldest dropped first).

    At most one reading per ``min_interval_s`` is kept per point (a sensor polled every second would
    otherwise fill the window in hours); the default keeps eight days of one-minute readings.
    """

    def __init__(
        self, points: Iterable[PointKey] = (), max_per_point: int = 12_000, min_interval_s: float = 60.0
    ) -> None:
        self.max_per_point = max_per_point
        self.min_interval_s = min_interval_s
        self._data: dict[PointKey, deque[tuple[float, float]]] = {}
        for key in points:
            self.watch(*key)

    def watch(self, device: str, point: str) -> None:
        """Start keeping readings of ``device``/``point``."""
        self._data.setdefault((device, point), deque(maxlen=self.max_per_point))

    def watched(self) -> set[PointKey]:
        """The points kept."""
        return set(self._data)

    def add(self, readings: Sequence[Reading]) -> None:
        """Keep the readings of watched points; non-numeric or BAD ones count as missing."""
        for r in readings:
            buf = self._data.get((r.device, r.point))
            if buf is None:
                continue
            if buf and 0.0 <= r.ts - buf[-1][0] < self.min_interval_s:
                continue
            value = r.value
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and r.quality != Quality.BAD
            buf.append((float(r.ts), float(value) if ok else float("nan")))  # type: ignore[arg-type]

    def series(self, device: str, point: str, start: float, end: float) -> tuple[FloatArray, FloatArray]:
        """Timestamps and values with ``start <= ts < end``, sorted by time."""
        buf = self._data.get((device, point))
        if not buf:
            return np.zeros(0), np.zeros(0)
        arr = np.array(buf, dtype=np.float64)
        keep = (arr[:, 0] >= start) & (arr[:, 0] < end)
        arr = arr[keep]
        order = np.argsort(arr[:, 0], kind="stable")
        return arr[order, 0], arr[order, 1]


class ScaledSeries:
    """A reader that puts points into the models' units.

    ``scales`` multiplies values (e.g. % VWC × 0.01 → m³/m³). Points in ``cumulative`` are running
    totals (a rain gauge's counter): they are turned into the amount since the previous reading, a
    counter that went down (reset or rollover) counting its new value as the amount.
    """

    LOOKBACK_S = 86400.0  # how far before ``start`` to look for the reading that precedes it

    def __init__(
        self, inner: SeriesReader, scales: dict[PointKey, float], cumulative: set[PointKey] | None = None
    ) -> None:
        self.inner = inner
        self.scales = scales
        self.cumulative = cumulative or set()

    def series(self, device: str, point: str, start: float, end: float) -> tuple[FloatArray, FloatArray]:
        """The inner series, scaled (and differenced for cumulative points)."""
        key = (device, point)
        scale = self.scales.get(key, 1.0)
        if key not in self.cumulative:
            ts, vals = self.inner.series(device, point, start, end)
            return ts, vals * scale
        ts, vals = self.inner.series(device, point, start - self.LOOKBACK_S, end)
        ok = np.isfinite(vals)
        ts, vals = ts[ok], vals[ok]
        if len(ts) < 2:
            return np.zeros(0), np.zeros(0)
        step = np.diff(vals)
        step = np.where(step < 0, vals[1:], step)
        keep = ts[1:] >= start
        return ts[1:][keep], step[keep] * scale


class HistoryTee:
    """A sink that copies readings into a :class:`ReadingHistory` and passes them on unchanged."""

    def __init__(self, inner: ReadingSink, history: ReadingHistory) -> None:
        self.inner = inner
        self.history = history

    async def put(self, readings: Sequence[Reading]) -> None:
        """Record, then forward."""
        self.history.add(readings)
        await self.inner.put(readings)


def hourly(
    ts: FloatArray, values: FloatArray, end: float, hours: int, how: str = "mean"
) -> FloatArray:
    """``hours`` hourly bins ending at ``end`` (oldest first); ``how`` is ``mean``, ``last`` or ``sum``.

    A bin with no valid reading is NaN, which the fault features read as a dropout.
    """
    out = np.full(hours, np.nan)
    if len(ts) == 0:
        return out
    start = end - hours * 3600.0
    idx = np.floor((ts - start) / 3600.0).astype(np.int64)
    ok = (idx >= 0) & (idx < hours) & np.isfinite(values)
    idx, vals = idx[ok], values[ok]
    if len(idx) == 0:
        return out
    if how == "last":
        out[idx] = vals  # fancy assignment keeps the last of repeated indices (ts are sorted)
        return out
    sums = np.bincount(idx, weights=vals, minlength=hours)
    counts = np.bincount(idx, minlength=hours)
    has = counts > 0
    out[has] = sums[has] if how == "sum" else sums[has] / counts[has]
    return out


def local_midnights(end: float, days: int, tz: str) -> list[float]:
    """UTC timestamps of the ``days + 1`` local midnights bounding the last ``days`` complete days."""
    zone = zoneinfo.ZoneInfo(tz)
    today = dt.datetime.fromtimestamp(end, zone).date()
    return [
        dt.datetime.combine(today - dt.timedelta(days=days - i), dt.time(0), zone).timestamp()
        for i in range(days + 1)
    ]


def daily(
    ts: FloatArray, values: FloatArray, bounds: Sequence[float], how: str, min_count: int = 1
) -> FloatArray:
    """One value per day between consecutive ``bounds``: ``mean``, ``max``, ``min``, ``sum`` or ``end``.

    ``end`` is the mean of the readings in the day's last three hours (the soil water at the end of
    the day, as the simulation reports it). Days with fewer than ``min_count`` valid readings are NaN.
    """
    out = np.full(len(bounds) - 1, np.nan)
    ok = np.isfinite(values)
    ts, values = ts[ok], values[ok]
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        sel = values[(ts >= lo) & (ts < hi)]
        if len(sel) < min_count:
            continue
        if how == "end":
            late = values[(ts >= hi - 3 * 3600.0) & (ts < hi)]
            out[i] = float(np.mean(late)) if len(late) else float(sel[-1])
        elif how == "mean":
            out[i] = float(np.mean(sel))
        elif how == "max":
            out[i] = float(np.max(sel))
        elif how == "min":
            out[i] = float(np.min(sel))
        elif how == "sum":
            out[i] = float(np.sum(sel))
        else:
            raise ValueError(f"unknown daily aggregate {how!r}")
    return out
