"""A synthetic two-lane road: the camera pipeline's emulator, with exact ground truth.

Vehicles are filled rectangles driving left-to-right in the upper lane and right-to-left in the
lower lane over a fixed textured background with per-frame sensor noise. The truth (crossings of
the vertical centre line per direction, and per-frame occupancy of a zone) follows from the drawn
positions, so tests and benchmarks can check the pipeline's counts against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.camera.tracker import CountLine, Zone

EASTBOUND, WESTBOUND = "eastbound", "westbound"


@dataclass(frozen=True)
class Vehicle:
    """One vehicle: lane 0 drives east (+x), lane 1 west; it enters at ``start`` (frame index)."""

    lane: int
    start: int
    speed: float
    length: float
    height: float
    colour: tuple[int, int, int]


class RoadScene:
    """Deterministic frames and ground truth for ``frames`` frames of ``width`` x ``height``."""

    lane_y = (0.38, 0.66)
    line = CountLine("centre", (0.5, 0.1), (0.5, 0.95), (EASTBOUND, WESTBOUND))
    zone = Zone("approach", ((0.6, 0.2), (0.95, 0.2), (0.95, 0.85), (0.6, 0.85)))

    def __init__(
        self, width: int = 640, height: int = 360, frames: int = 300, seed: int = 7, rate: float = 0.03
    ):
        self.width, self.height, self.frames = width, height, frames
        rng = np.random.default_rng(seed)
        self.vehicles: list[Vehicle] = []
        for lane in (0, 1):
            t = float(rng.integers(0, 10))
            leader: Vehicle | None = None
            while t < frames:
                length = float(rng.uniform(0.07, 0.13)) * width
                speed = float(rng.uniform(0.006, 0.012)) * width
                if leader is not None:
                    # No overtaking: when the leader's rear leaves the screen, this vehicle's
                    # front must still be a gap behind it.
                    leader_exit = leader.start + (width + leader.length) / leader.speed
                    t = max(t, leader_exit - (width - 0.5 * length) / speed)
                bright = rng.integers(0, 2)
                base = int(rng.integers(190, 255)) if bright else int(rng.integers(0, 40))
                colour = (base, int(np.clip(base + rng.integers(-30, 30), 0, 255)), base)
                leader = Vehicle(lane, int(np.ceil(t)), speed, length, 0.1 * height, colour)
                self.vehicles.append(leader)
                t = leader.start + (length * 1.8) / speed + float(rng.exponential(1 / rate))
        # Sensor noise: a bank of 7 noise fields cycled frame by frame (cheaper than drawing anew).
        noise_rng = np.random.default_rng(seed + 1)
        self._noise = [
            np.round(noise_rng.normal(0, 2.0, (height, width, 1))).astype(np.int16) for _ in range(7)
        ]
        yy, xx = np.mgrid[0:height, 0:width]
        coarse = rng.normal(0, 6, (height // 8 + 1, width // 8 + 1))
        texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
        grey = 95 + 20 * (yy / height) + 8 * np.sin(xx / 37.0) + texture
        self.background = np.clip(np.stack([grey, grey + 5, grey - 5], axis=2), 0, 255).astype(np.uint8)
        for y in (0.25, 0.52, 0.8):
            cv2.line(self.background, (0, int(y * height)), (width, int(y * height)), (180, 180, 180), 2)

    def boxes(self, index: int) -> list[tuple[Vehicle, tuple[float, float, float, float]]]:
        """Vehicles on screen in frame ``index`` with their boxes in pixels."""
        out = []
        for v in self.vehicles:
            travelled = (index - v.start) * v.speed
            if travelled < 0:
                continue
            x1 = -v.length + travelled if v.lane == 0 else self.width - travelled
            x2 = x1 + v.length
            if x2 <= 0 or x1 >= self.width:
                continue
            cy = self.lane_y[v.lane] * self.height
            out.append((v, (x1, cy - v.height / 2, x2, cy + v.height / 2)))
        return out

    def frame(self, index: int) -> np.ndarray:
        """The BGR frame ``index``."""
        img = self.background.copy()
        for v, (x1, y1, x2, y2) in self.boxes(index):
            cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), v.colour, thickness=-1)
        return np.clip(img.astype(np.int16) + self._noise[index % len(self._noise)], 0, 255).astype(np.uint8)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(self.frames))

    def true_crossings(self) -> dict[str, int]:
        """Crossings of the centre line within the video, per direction."""
        truth = {EASTBOUND: 0, WESTBOUND: 0}
        mid = self.line.a[0] * self.width
        for v in self.vehicles:
            last = self.frames - 1
            travelled = (last - v.start) * v.speed
            if travelled <= 0:
                continue
            centre_first = (-v.length / 2) if v.lane == 0 else (self.width + v.length / 2)
            centre_last = centre_first + travelled if v.lane == 0 else centre_first - travelled
            if v.lane == 0 and centre_first < mid < centre_last:
                truth[EASTBOUND] += 1
            if v.lane == 1 and centre_last < mid < centre_first:
                truth[WESTBOUND] += 1
        return truth

    def true_occupancy(self, index: int) -> int:
        """Vehicles whose visible part's centre is in the zone in frame ``index``."""
        n = 0
        for _, (x1, y1, x2, y2) in self.boxes(index):
            x1, x2 = max(x1, 0.0), min(x2, float(self.width))
            if self.zone.contains(((x1 + x2) / 2 / self.width, (y1 + y2) / 2 / self.height)):
                n += 1
        return n

    def write(self, path: Path, fps: float = 25.0) -> Path:
        """Write the scene as an MJPEG .avi file (readable by :func:`models.camera.frames.open_capture`)."""
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (self.width, self.height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {path}")
        try:
            for img in self:
                writer.write(img)
        finally:
            writer.release()
        return path
