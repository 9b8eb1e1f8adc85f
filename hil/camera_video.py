"""A synthetic junction-approach video with ground truth, built from real photographs.

Everything comes from an installed package, nothing is fetched: the road surface is scikit-image's
``gravel`` photograph (stone aggregate, shrunk and toned to asphalt grey) and every vehicle is cut
from scikit-image's ``stereo_motorcycle`` photograph (a Yamaha motorcycle, the Middlebury 2014
stereo set bundled in the wheel), separated from its garage with the photograph's own disparity
map, then recoloured (red, blue, white, and dark ones at about a third of the brightness). No
installed package checked ships a usable car photograph (opencv-doc's ``black_car``/``white_car``
are blurred deblurring demos), so the queues are of motorcycles, the common vehicle at a
Vietnamese junction.

The scene, seen from the side of the road: an eastbound approach lane with a stop line (the
counting line) and an ``approach`` zone behind it; a westbound lane of free-flowing traffic above
it; a signal that shows red for 60 s twice, with queues of 4 and then 5 vehicles arriving and
stopping, leaving on the green; vehicles passing on the greens; cast shadows; sensor noise and a
slow brightness drift. Deterministic from the seed, at any frame rate (the motion is simulated at
30 Hz and sampled).

    python -m hil.camera_video --fps 10 --out DIR [--seed 1] [--width 1280 --height 720]

writes ``DIR/approach-10fps.avi`` (MJPEG) and ``DIR/approach-10fps.json``: per frame the time,
the signal, the vehicles in the zone, the queue (those in the zone slower than
``queue_speed``) and the stop-line crossings so far, plus the zone and line to configure.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

SIM_HZ = 30.0
STOP_X = 0.78  # the stop line, fraction of the width
NEAR_Y, FAR_Y = 0.64, 0.30  # lane centres
ZONE = ((0.03, 0.50), (STOP_X, 0.50), (STOP_X, 0.80), (0.03, 0.80))
LINE = ((STOP_X, 0.48), (STOP_X, 0.82))
QUEUE_SPEED = 0.02  # frame widths per second: slower than this in the zone is queued
# (start, end) of each red, seconds; green otherwise.
REDS = ((8.0, 68.0), (88.0, 148.0))
# Arrival times on the approach (seconds): 1 passes on the first green, 4 queue at the first red,
# 2 pass on the second green, 5 queue at the second red, 1 passes on the last green.
ARRIVALS = (1.5, 10.0, 14.0, 19.0, 25.0, 71.0, 78.0, 90.0, 93.0, 98.0, 104.0, 112.0, 152.0)
SECONDS = 170.0
COLOURS = {"red": None, "blue": (110, 0.9), "white": (None, 1.6), "dark": (None, 0.33)}


@dataclass
class Vehicle:
    """One vehicle's state on its lane; ``x`` is its front (eastbound) or rear (westbound) in pixels."""

    lane: str
    colour: str
    arrive: float
    x: float
    v: float
    length: float
    crossed: bool = False
    moving_since: float = 0.0


@dataclass
class FrameTruth:
    """What is true in one frame."""

    t: float
    signal: str
    in_zone: int
    queue: int
    crossings: int


@dataclass
class Truth:
    """The whole clip's ground truth and the geometry to configure the camera with."""

    fps: float
    width: int
    height: int
    seed: int
    zone: list[tuple[float, float]]
    line: list[tuple[float, float]]
    line_directions: tuple[str, str]
    queue_speed: float
    reds: list[tuple[float, float]]
    frames: list[FrameTruth] = field(default_factory=list)
    what: str = __doc__.split("\n\n")[0] if __doc__ else ""


@functools.lru_cache(maxsize=1)
def motorcycle() -> tuple[np.ndarray, np.ndarray]:
    """The motorcycle cut from its photograph: BGR image and alpha mask (0..1), tightly cropped.

    The disparity map that comes with the stereo pair separates it from the shelves behind; the
    floor is as near as the wheels at the bottom, so a pixel belongs to the vehicle only when it
    is nearer than the floor's plane in its row (fitted by eye from the map: 31 px at row 350,
    rising 0.17 px per row).
    """
    from skimage import data  # dev extra only: the generator is a bench and test tool

    left, _, disparity = data.stereo_motorcycle()
    rows = np.arange(disparity.shape[0], dtype=np.float64)[:, None]
    floor = 31.0 + (rows - 350.0) * 0.17
    near = np.where(np.isfinite(disparity), disparity, 0.0)
    raw = np.where(near > np.maximum(36.0, floor + 4.0), 255, 0).astype(np.uint8)
    mask = cv2.morphologyEx(
        cv2.morphologyEx(raw, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)), cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8)
    )
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    biggest = 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[biggest, :4])
    alpha = (labels[y : y + h, x : x + w] == biggest).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
    image = cv2.cvtColor(left[y : y + h, x : x + w], cv2.COLOR_RGB2BGR)
    return image, alpha


def recolour(image: np.ndarray, colour: str) -> np.ndarray:
    """The red motorcycle repainted: hue turned for ``blue``, brightness scaled for white and dark."""
    hue, gain = COLOURS[colour] or (None, 1.0)
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
    if hue is not None:
        red = (hsv[..., 0] < 12) | (hsv[..., 0] > 165)
        hsv[..., 0] = np.where(red, hue, hsv[..., 0])
    if colour == "white":
        hsv[..., 1] *= 0.25
    hsv[..., 2] = np.clip(hsv[..., 2] * gain, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def asphalt(width: int, height: int) -> np.ndarray:
    """The road: the gravel photograph shrunk to a fine grain, tiled and toned dark grey."""
    from skimage import data

    grain = cv2.resize(data.gravel(), (192, 192), interpolation=cv2.INTER_AREA).astype(np.float32)
    tiles = np.tile(grain, (height // 192 + 1, width // 192 + 1))[:height, :width]
    tone = 70.0 + (tiles - tiles.mean()) * 0.45
    road = np.stack([tone + 4, tone + 2, tone], axis=2)
    return np.clip(road, 0, 255).astype(np.uint8)


class ApproachVideo:
    """The clip: ``frames()`` yields BGR frames, ``truth`` what each one holds."""

    def __init__(
        self, fps: float = 10.0, seed: int = 1, width: int = 1280, height: int = 720, seconds: float = SECONDS
    ) -> None:
        self.fps, self.seed, self.width, self.height, self.seconds = fps, seed, width, height, seconds
        rng = np.random.default_rng(seed)
        self.scale = width / 1280
        self.background = self._paint_road(asphalt(width, height))
        base, self._alpha = motorcycle()
        self.sprite_len = 150 * self.scale
        self._sprites: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for colour in COLOURS:
            painted = recolour(base, colour)
            for lane, size in (("near", 1.0), ("far", 0.8)):
                w = max(4, round(self.sprite_len * size))
                h = max(3, round(w * base.shape[0] / base.shape[1]))
                image = cv2.resize(painted, (w, h), interpolation=cv2.INTER_AREA)
                alpha = cv2.resize(self._alpha, (w, h), interpolation=cv2.INTER_AREA)
                if lane == "far":  # westbound: facing left
                    image, alpha = image[:, ::-1].copy(), alpha[:, ::-1].copy()
                self._sprites[(lane, colour)] = (image, alpha)
        names = list(COLOURS)
        self.vehicles = [
            Vehicle(
                "near",
                names[(i + int(rng.integers(0, 4))) % 4] if i % 3 else "dark",
                t,
                -self.sprite_len,
                360 * self.scale,  # arrives at speed
                self.sprite_len,
            )
            for i, t in enumerate(ARRIVALS)
        ]
        t, far = 0.0, []
        while t < seconds:
            far.append(Vehicle("far", names[int(rng.integers(0, 4))], t, width + 0.0, 0, self.sprite_len * 0.8))
            t += float(rng.uniform(2.5, 6.0))
        self.vehicles += far
        self._noise = [
            np.round(np.random.default_rng(seed + k).normal(0, 2.5, (height, width, 1))).astype(np.int16)
            for k in range(5)
        ]
        self.truth = Truth(
            fps, width, height, seed, list(ZONE), list(LINE), ("eastbound", "westbound"), QUEUE_SPEED, list(REDS)
        )

    def _paint_road(self, road: np.ndarray) -> np.ndarray:
        w, h = self.width, self.height
        white = (200, 200, 200)
        for y in (0.17, 0.47, 0.83):
            cv2.line(road, (0, int(y * h)), (w, int(y * h)), white, max(1, round(4 * self.scale)))
        cv2.rectangle(road, (int(STOP_X * w), int(0.48 * h)), (int(STOP_X * w) + max(2, round(10 * self.scale)), int(0.82 * h)), white, -1)
        return road

    def signal(self, t: float) -> str:
        """``red`` or ``green`` at ``t`` seconds."""
        return "red" if any(a <= t < b for a, b in REDS) else "green"

    def _step(self, t: float, dt: float) -> None:
        vmax, accel, brake, gap = 360 * self.scale, 160 * self.scale, 260 * self.scale, 22 * self.scale
        stop = STOP_X * self.width
        near = sorted((v for v in self.vehicles if v.lane == "near" and v.arrive <= t), key=lambda v: -v.x)
        leader: Vehicle | None = None
        for v in near:
            room = math.inf
            if leader is not None:
                room = leader.x - leader.length - gap - v.x
            if self.signal(t) == "red" and v.x <= stop + 1 and v.v**2 / (2 * brake) <= stop - v.x + 30 * self.scale:
                room = min(room, stop - v.x)
            target = min(vmax, math.sqrt(2 * brake * max(0.0, room)))
            if v.v == 0.0 and target > 0 and t < self._may_start(leader, t):
                target = 0.0  # a stopped rider reacts about a second after the one ahead moves
            if v.v == 0.0 and target > 0:
                v.moving_since = t
            v.v = min(target, v.v + accel * dt)
            before = v.x - v.length / 2
            v.x += v.v * dt
            if not v.crossed and before < stop <= v.x - v.length / 2:
                v.crossed = True
            leader = v
        for v in self.vehicles:
            if v.lane == "far" and v.arrive <= t:
                v.v = 400 * self.scale
                v.x -= v.v * dt

    def _may_start(self, leader: Vehicle | None, t: float) -> float:
        if leader is not None and leader.x - leader.length < STOP_X * self.width:
            return leader.moving_since + 1.0 if leader.v > 0 else math.inf
        green = max((b for _, b in REDS if b <= t), default=0.0)
        return green + 1.0

    def _box(self, v: Vehicle) -> tuple[float, float, float, float]:
        image, _ = self._sprites[(v.lane, v.colour)]
        h = image.shape[0]
        x1 = v.x - v.length if v.lane == "near" else v.x
        cy = (NEAR_Y if v.lane == "near" else FAR_Y) * self.height
        return x1, cy - h / 2, x1 + v.length, cy + h / 2

    def _truth(self, t: float, crossings: int) -> FrameTruth:
        zone = (np.array(ZONE) * (self.width, self.height)).astype(np.float32)
        inside = queue = 0
        for v in self.vehicles:
            if v.lane != "near" or v.arrive > t:
                continue
            x1, y1, x2, y2 = self._box(v)
            x1, x2 = max(x1, 0.0), min(x2, float(self.width))
            if x2 <= x1:
                continue
            centre = ((x1 + x2) / 2, (y1 + y2) / 2)
            if cv2.pointPolygonTest(zone, centre, False) > 0:
                inside += 1
                queue += int(v.v < QUEUE_SPEED * self.width)
        return FrameTruth(round(t, 4), self.signal(t), inside, queue, crossings)

    def _draw(self, t: float, index: int) -> np.ndarray:
        img = self.background.astype(np.float32)
        shade = np.ones(img.shape[:2], np.float32)
        drawn = []
        for v in self.vehicles:
            if v.arrive > t:
                continue
            x1, y1, x2, _ = self._box(v)
            if x2 <= 0 or x1 >= self.width:
                continue
            drawn.append((v, round(x1), round(y1)))
        for v, x, y in drawn:  # cast shadows first: the sun is behind the camera, a little to the left
            _, alpha = self._sprites[(v.lane, v.colour)]
            h, w = alpha.shape
            sh = cv2.resize(alpha, (w, max(1, h // 3)))
            _blend_mask(shade, sh, x + round(12 * self.scale), y + h - sh.shape[0] // 2, 0.45)
        img *= shade[..., None]
        for v, x, y in drawn:
            image, alpha = self._sprites[(v.lane, v.colour)]
            _paste(img, image, alpha, x, y)
        gain = 1.0 + 0.04 * math.sin(2 * math.pi * t / 120.0)
        out = img * gain + self._noise[index % len(self._noise)]
        return np.clip(out, 0, 255).astype(np.uint8)

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame at ``fps``; fills :attr:`truth` as it goes."""
        self.truth.frames.clear()
        sim_t, dt, crossings = 0.0, 1.0 / SIM_HZ, 0
        for index in range(int(self.seconds * self.fps)):
            t = index / self.fps
            while sim_t + dt <= t + 1e-9:
                self._step(sim_t, dt)
                sim_t += dt
            crossings = sum(1 for v in self.vehicles if v.crossed)
            self.truth.frames.append(self._truth(t, crossings))
            yield self._draw(t, index)

    def write(self, folder: Path) -> tuple[Path, Path]:
        """The clip as MJPEG ``.avi`` and its truth as ``.json`` in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"approach-{self.fps:g}fps"
        video, truth = stem.with_suffix(".avi"), stem.with_suffix(".json")
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), self.fps, (self.width, self.height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {video}")
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 90)
        try:
            for frame in self.frames():
                writer.write(frame)
        finally:
            writer.release()
        truth.write_text(json.dumps(asdict(self.truth)))
        return video, truth


def _clip(x: int, y: int, w: int, h: int, shape: tuple[int, ...]) -> tuple[slice, slice, slice, slice] | None:
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, shape[1]), min(y + h, shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1), slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)


def _paste(img: np.ndarray, image: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    cut = _clip(x, y, image.shape[1], image.shape[0], img.shape)
    if cut is None:
        return
    ys, xs, sy, sx = cut
    a = alpha[sy, sx, None]
    img[ys, xs] = img[ys, xs] * (1 - a) + image[sy, sx] * a


def _blend_mask(shade: np.ndarray, mask: np.ndarray, x: int, y: int, depth: float) -> None:
    cut = _clip(x, y, mask.shape[1], mask.shape[0], shade.shape)
    if cut is None:
        return
    ys, xs, sy, sx = cut
    shade[ys, xs] = np.minimum(shade[ys, xs], 1 - depth * mask[sy, sx])


def main() -> None:
    """Write one clip and its truth."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--seconds", type=float, default=SECONDS)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    clip = ApproachVideo(args.fps, args.seed, args.width, args.height, args.seconds)
    video, truth = clip.write(args.out)
    last = clip.truth.frames[-1]
    print(f"{video} ({len(clip.truth.frames)} frames), {truth}: {last.crossings} stop-line crossings")


if __name__ == "__main__":
    main()
