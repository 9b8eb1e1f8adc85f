"""Per-interval tallies of a camera and their Readings.

A :class:`CountsAccumulator` folds :class:`TrackState` frames into a :class:`CameraCounts` per
interval. Readings carry the model's name and version in ``meta``; the zones of each listener
interval also go to the traffic controller as :class:`kernel.detectors.ZoneCount` events on the run
context's detector bus (see :mod:`models.camera.kind`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from kernel.readings import ClockQuality, Priority, Reading
from models.camera.tracker import TrackState

log = logging.getLogger("kbe.camera")


@dataclass(frozen=True)
class CameraCounts:
    """One camera's tallies over ``[start, end)``.

    ``crossings[line][direction]`` counts line crossings; occupancy and queue are per zone: the
    value in the last frame, the mean over the interval's frames and the maximum.
    """

    camera: str
    start: float
    end: float
    frames: int
    detector_runs: int
    crossings: dict[str, dict[str, int]]
    occupancy: dict[str, int]
    occupancy_mean: dict[str, float]
    occupancy_max: dict[str, int]
    queue: dict[str, int]
    queue_max: dict[str, int]
    meta: dict[str, str] = field(default_factory=dict)

    def readings(self, clock: ClockQuality = ClockQuality.SYNCED) -> list[Reading]:
        """The tallies as Readings for the store (timestamped at the interval's end)."""
        out = []
        meta = {**self.meta, "interval_s": f"{self.end - self.start:.3f}"}

        def add(point: str, value: float, unit: str) -> None:
            out.append(
                Reading(
                    self.camera,
                    point,
                    value,
                    self.end,
                    unit,
                    priority=Priority.TELEMETRY,
                    clock=clock,
                    meta=meta,
                )
            )

        for line, by_dir in sorted(self.crossings.items()):
            for direction, n in sorted(by_dir.items()):
                add(f"line.{line}.{direction}", n, "count")
        for zone in sorted(self.occupancy):
            add(f"zone.{zone}.occupancy", self.occupancy[zone], "count")
            add(f"zone.{zone}.occupancy_mean", round(self.occupancy_mean[zone], 3), "count")
            add(f"zone.{zone}.occupancy_max", self.occupancy_max[zone], "count")
            add(f"zone.{zone}.queue", self.queue[zone], "count")
            add(f"zone.{zone}.queue_max", self.queue_max[zone], "count")
        add("frames", self.frames, "count")
        add("detector_runs", self.detector_runs, "count")
        return out


class CountsAccumulator:
    """Folds frames into one interval's :class:`CameraCounts`; :meth:`take` closes the interval."""

    def __init__(
        self, camera: str, lines: dict[str, tuple[str, str]], zones: list[str], start: float
    ) -> None:
        self.camera = camera
        self.lines = lines
        self.zones = zones
        self._reset(start)

    def _reset(self, start: float) -> None:
        self.start = start
        self.frames = 0
        self.detector_runs = 0
        self.crossings: dict[str, Counter[str]] = {name: Counter() for name in self.lines}
        self.occ_sum: Counter[str] = Counter()
        self.occ_max: Counter[str] = Counter()
        self.queue_max: Counter[str] = Counter()
        self.last: TrackState | None = None

    def add(self, state: TrackState, detector_ran: bool) -> None:
        """Fold one frame in."""
        self.frames += 1
        self.detector_runs += int(detector_ran)
        for c in state.crossings:
            self.crossings[c.line][c.direction] += 1
        for zone, n in state.occupancy.items():
            self.occ_sum[zone] += n
            self.occ_max[zone] = max(self.occ_max[zone], n)
            self.queue_max[zone] = max(self.queue_max[zone], state.queue[zone])
        self.last = state

    def take(self, end: float, meta: dict[str, str]) -> CameraCounts:
        """The interval's counts; starts the next interval at ``end``."""
        frames = max(self.frames, 1)
        last = self.last
        counts = CameraCounts(
            camera=self.camera,
            start=self.start,
            end=end,
            frames=self.frames,
            detector_runs=self.detector_runs,
            crossings={line: {d: self.crossings[line][d] for d in dirs} for line, dirs in self.lines.items()},
            occupancy={z: (last.occupancy[z] if last else 0) for z in self.zones},
            occupancy_mean={z: self.occ_sum[z] / frames for z in self.zones},
            occupancy_max={z: self.occ_max[z] for z in self.zones},
            queue={z: (last.queue[z] if last else 0) for z in self.zones},
            queue_max={z: self.queue_max[z] for z in self.zones},
            meta=dict(meta),
        )
        self._reset(end)
        return counts
