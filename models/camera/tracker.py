"""A centroid/IoU tracker with line-crossing counts, zone occupancy and queue length.

Detector-agnostic: it takes :class:`Detection` boxes per frame. Each detection is matched to the
live track it overlaps most (IoU), else to the nearest track within ``max_distance`` (a fraction
of the frame diagonal); unmatched detections start tracks; a track unseen for ``max_missed_s``
is dropped, unless the caller says its box still differs from the empty road (``present``): a
vehicle standing in a queue, merged into its neighbour's blob or too still to be a blob of its own,
stays counted where it stopped until its pixels are road again. Geometry (lines, zones) is in normalised frame coordinates (0..1), so a config
survives a change of stream resolution.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from models.camera.detectors import Detection
from models.camera.geometry import iou_matrix

Point = tuple[float, float]
Anchor = Literal["centre", "bottom"]


@dataclass(frozen=True)
class CountLine:
    """A counting line from ``a`` to ``b``. Crossing it right-to-left of the a->b direction counts as
    ``directions[0]``, left-to-right as ``directions[1]`` (image coordinates, y down)."""

    name: str
    a: Point
    b: Point
    directions: tuple[str, str] = ("forward", "backward")

    def side(self, p: Point) -> float:
        """Positive on one side of the line, negative on the other."""
        return (self.b[0] - self.a[0]) * (p[1] - self.a[1]) - (self.b[1] - self.a[1]) * (p[0] - self.a[0])

    def crossing(self, p: Point, q: Point) -> str | None:
        """The direction name if the step p->q crosses the segment, else None."""
        # A point exactly on the line belongs to the non-positive side, so a step that lands on the
        # line and the next one that leaves it count once between them.
        s1, s2 = self.side(p) > 0, self.side(q) > 0
        if s1 == s2:
            return None
        # The step's own line must separate a and b too, or the crossing is beyond the segment's ends.
        d1 = (q[0] - p[0]) * (self.a[1] - p[1]) - (q[1] - p[1]) * (self.a[0] - p[0])
        d2 = (q[0] - p[0]) * (self.b[1] - p[1]) - (q[1] - p[1]) * (self.b[0] - p[0])
        if (d1 > 0 and d2 > 0) or (d1 < 0 and d2 < 0):
            return None
        return self.directions[0] if s1 else self.directions[1]


@dataclass(frozen=True)
class Zone:
    """A polygon zone. Tracks slower than ``queue_speed`` (frame widths per second) inside it are queued."""

    name: str
    polygon: tuple[Point, ...]
    queue_speed: float = 0.02

    def contains(self, p: Point) -> bool:
        """Point in polygon (even-odd rule)."""
        inside = False
        pts = self.polygon
        for i in range(len(pts)):
            x1, y1 = pts[i]
            x2, y2 = pts[(i + 1) % len(pts)]
            if (y1 > p[1]) != (y2 > p[1]):
                x = x1 + (p[1] - y1) * (x2 - x1) / (y2 - y1)
                if p[0] < x:
                    inside = not inside
        return inside


@dataclass
class Track:
    """One followed object; positions are normalised anchor points."""

    id: int
    box: np.ndarray
    label: str
    first_ts: float
    last_ts: float
    hits: int = 1
    history: deque[tuple[float, Point]] = field(default_factory=lambda: deque(maxlen=64))
    counted: dict[str, str] = field(default_factory=dict)

    @property
    def point(self) -> Point:
        """The latest anchor point."""
        return self.history[-1][1]

    def speed(self, window_s: float = 1.0) -> float:
        """Mean speed over the last ``window_s`` seconds, in frame widths per second."""
        if len(self.history) < 2:
            return 0.0
        t1, p1 = self.history[-1]
        t0, p0 = t1, p1
        for t, p in reversed(self.history):
            if t1 - t > window_s:
                break
            t0, p0 = t, p
        if t1 <= t0:
            return 0.0
        return math.dist(p0, p1) / (t1 - t0)


@dataclass(frozen=True)
class Crossing:
    """A track crossed a line."""

    line: str
    direction: str
    track_id: int
    label: str
    ts: float


@dataclass(frozen=True)
class TrackState:
    """What one frame left: crossings in it, occupancy and queue per zone, live track count."""

    ts: float
    crossings: list[Crossing]
    occupancy: dict[str, int]
    queue: dict[str, int]
    tracks: int


class Tracker:
    """Matches detections to tracks frame by frame and keeps the line and zone tallies."""

    def __init__(
        self,
        lines: Sequence[CountLine] = (),
        zones: Sequence[Zone] = (),
        iou_min: float = 0.1,
        max_distance: float = 0.08,
        max_missed_s: float = 0.5,
        anchor: Anchor = "centre",
        min_hits: int = 2,
    ) -> None:
        self.lines = list(lines)
        self.zones = list(zones)
        self.iou_min = iou_min
        self.max_distance = max_distance
        self.max_missed_s = max_missed_s
        self.anchor = anchor
        self.min_hits = min_hits
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def _point(self, box: np.ndarray, size: tuple[int, int]) -> Point:
        w, h = size
        y = box[3] if self.anchor == "bottom" else (box[1] + box[3]) / 2
        return (float((box[0] + box[2]) / 2 / w), float(y / h))

    def _match(self, boxes: np.ndarray, size: tuple[int, int]) -> list[tuple[int, int]]:
        ids = list(self.tracks)
        if not ids or not len(boxes):
            return []
        track_boxes = np.array([self.tracks[i].box for i in ids])
        iou = iou_matrix(track_boxes, boxes)
        diag = math.hypot(*size)
        tc = np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in track_boxes])
        dc = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        dist = np.linalg.norm(tc[:, None, :] - dc[None, :, :], axis=2) / diag
        score = np.where(
            iou >= self.iou_min, 1.0 + iou, np.where(dist <= self.max_distance, 1.0 - dist, -1.0)
        )
        pairs = []
        while True:
            t, d = np.unravel_index(int(np.argmax(score)), score.shape)
            if score[t, d] < 0:
                break
            pairs.append((ids[t], int(d)))
            score[t, :] = -1.0
            score[:, d] = -1.0
        return pairs

    def update(
        self,
        detections: Sequence[Detection],
        ts: float,
        size: tuple[int, int],
        present: Callable[[np.ndarray], bool] | None = None,
    ) -> TrackState:
        """Feed one frame's detections (``size`` is the frame's width, height).

        ``present(box)`` tells whether an unmatched track's box still differs from the empty road;
        such a track is kept where it is (it has stopped) instead of ageing out.
        """
        boxes = np.array([d.box for d in detections], np.float64).reshape(-1, 4)
        crossings: list[Crossing] = []
        matched = set()
        for track_id, det_idx in self._match(boxes, size):
            track = self.tracks[track_id]
            previous = track.point
            track.box = boxes[det_idx]
            track.last_ts = ts
            track.hits += 1
            track.history.append((ts, self._point(track.box, size)))
            matched.add(det_idx)
            crossings.extend(self._crossings(track, previous, ts))
        for i, det in enumerate(detections):
            if i in matched:
                continue
            track = Track(self._next_id, boxes[i], det.label, ts, ts)
            track.history.append((ts, self._point(boxes[i], size)))
            self.tracks[track.id] = track
            self._next_id += 1
        if present is not None:
            for track in self.tracks.values():
                if track.last_ts != ts and track.hits >= self.min_hits and present(track.box):
                    track.last_ts = ts
                    track.history.append((ts, track.point))
        for track_id in [i for i, t in self.tracks.items() if ts - t.last_ts > self.max_missed_s]:
            del self.tracks[track_id]
        return self._state(ts, crossings)

    def hold(self, ts: float) -> TrackState:
        """A frame where nothing moved: tracks keep their place (stopped objects stay counted)."""
        for track in self.tracks.values():
            track.last_ts = ts
            track.history.append((ts, track.point))
        return self._state(ts, [])

    def _crossings(self, track: Track, previous: Point, ts: float) -> list[Crossing]:
        found = []
        for line in self.lines:
            if line.name in track.counted:
                continue
            direction = line.crossing(previous, track.point)
            if direction is not None:
                track.counted[line.name] = direction
                found.append(Crossing(line.name, direction, track.id, track.label, ts))
        return found

    def _state(self, ts: float, crossings: list[Crossing]) -> TrackState:
        live = [t for t in self.tracks.values() if t.last_ts == ts]
        occupancy = {}
        queue = {}
        for zone in self.zones:
            inside = [t for t in live if zone.contains(t.point)]
            occupancy[zone.name] = len(inside)
            queue[zone.name] = sum(
                1 for t in inside if t.hits >= self.min_hits and t.speed() < zone.queue_speed
            )
        return TrackState(ts, crossings, occupancy, queue, len(live))
