"""Motion gating: background subtraction tells where something moves, so detectors run only there.

OpenCV's MOG2 (Zivkovic 2004/2006 adaptive Gaussian mixture; ``cv2.createBackgroundSubtractorMOG2``)
runs on a grey copy scaled down to ``work_width`` pixels; shadows (marked 127 by MOG2) are dropped,
the mask is opened and closed, and each remaining blob becomes a box in full-frame pixels.

The background is updated selectively: pixels that differ from it (foreground or shadow) are not
learned from; the model is fed its own background image there instead. Plain MOG2 (learning rate
0.002, background ratio 0.9) absorbs a vehicle that stops after about 53 frames (about 5 s at
10 fps), so a queue at a red light vanished from the zones mid-red; with the selective update a
stopped vehicle stays foreground for ``max_hold_frames`` (then it is learned, like a parked car),
and when it leaves the road it uncovers still matches the background, so nothing is left behind.
When more than half the picture differs at once (a lighting change, the camera moved) everything
is learned as before.

The signal the agent commands gates learning too (:meth:`MotionGate.set_stop`): while a zone's
approach is shown red, none of its pixels is learned and a vehicle standing there never counts
towards ``max_hold_frames``, however long the red; on green the zone learns again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class MotionResult:
    """What moved in one frame: blob boxes (N, 4) ``x1, y1, x2, y2`` in frame pixels."""

    boxes: np.ndarray
    fraction: float = 0.0
    frame_size: tuple[int, int] = (0, 0)
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mask: np.ndarray | None = None
    """The foreground mask at the gate's working size (255 where the frame differs from the road)."""

    def covers(self, box: np.ndarray) -> float:
        """The fraction of ``box`` (frame pixels) that differs from the background."""
        if self.mask is None or not self.frame_size[0]:
            return 0.0
        sx = self.mask.shape[1] / self.frame_size[0]
        sy = self.mask.shape[0] / self.frame_size[1]
        x1, y1 = max(0, int(box[0] * sx)), max(0, int(box[1] * sy))
        x2, y2 = min(self.mask.shape[1], int(np.ceil(box[2] * sx))), min(self.mask.shape[0], int(np.ceil(box[3] * sy)))
        if x2 <= x1 or y2 <= y1:
            return 0.0
        return float(self.mask[y1:y2, x1:x2].mean() / 255)

    @property
    def moving(self) -> bool:
        """Whether anything moved."""
        return bool(len(self.boxes))


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` (w, h) with area averaging, cheaply: a large image is first brought to
    twice the target bilinearly, then halved by INTER_AREA's fast integer path (a direct
    INTER_AREA from 1280x720 costs about 20 times more)."""
    w, h = size
    if image.shape[1] > 2 * w and image.shape[0] > 2 * h:
        image = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


class MotionGate:
    """Background subtraction on a small grey copy of the frame.

    ``min_area`` is the smallest blob kept, as a fraction of the frame's area. ``warmup_frames``
    frames are used only to learn the background (nothing is reported moving meanwhile); after
    them the background adapts at ``learning_rate`` per frame (MOG2's own default, 1/frames-seen,
    adapts so fast early on that the flat roof of a slow vehicle melts into the background).
    Inside watched zones (:meth:`watch`) pixels MOG2 calls shadow count as foreground when
    ``keep_zone_shadows``: on the grey image its shadow test takes 30 to 48 % of a dark vehicle's
    pixels, and a shadow inside a zone lies beside the vehicle that casts it anyway.
    """

    def __init__(
        self,
        work_width: int = 320,
        min_area: float = 0.0015,
        history: int = 500,
        var_threshold: float = 25.0,
        warmup_frames: int = 5,
        close_px: int = 5,
        learning_rate: float = 0.002,
        max_hold_frames: int = 3000,
        keep_zone_shadows: bool = True,
    ) -> None:
        self.work_width = work_width
        self.max_hold_frames = max_hold_frames
        self._held: np.ndarray | None = None
        self.min_area = min_area
        self.warmup_frames = warmup_frames
        self.learning_rate = learning_rate
        self._frames = 0
        self._sub = cv2.createBackgroundSubtractorMOG2(
            history=history, varThreshold=var_threshold, detectShadows=True
        )
        self._zones: dict[str, tuple[tuple[float, float], ...]] = {}
        self._stopped: dict[str, bool] = {}
        self._zone_masks: dict[str, np.ndarray] = {}
        self._zones_mask: np.ndarray | None = None
        self.keep_zone_shadows = keep_zone_shadows
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px, close_px))

    def watch(self, name: str, polygon: tuple[tuple[float, float], ...]) -> None:
        """A zone (normalised polygon) whose learning :meth:`set_stop` may pause."""
        self._zones[name] = polygon
        self._zone_masks.pop(name, None)
        self._zones_mask = None

    def set_stop(self, zone: str, stop: bool) -> None:
        """The approach ``zone`` watches is shown red (``stop``) or green; safe from any thread."""
        if zone in self._zones:
            self._stopped[zone] = stop

    def _all_zones(self, shape: tuple[int, ...]) -> np.ndarray | None:
        if not self.keep_zone_shadows or not self._zones:
            return None
        if self._zones_mask is None or self._zones_mask.shape != shape[:2]:
            self._zones_mask = np.zeros(shape[:2], bool)
            for name in self._zones:
                self._zones_mask |= self._zone_mask(name, shape)
        return self._zones_mask

    def _zone_mask(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        mask = self._zone_masks.get(name)
        if mask is None or mask.shape != shape[:2]:
            mask = np.zeros(shape[:2], np.uint8)
            pts = np.array(self._zones[name]) * (shape[1], shape[0])
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
            mask = mask.astype(bool)
            self._zone_masks[name] = mask
        return mask

    def _frozen(self, shape: tuple[int, ...]) -> np.ndarray | None:
        frozen = None
        for name, stop in list(self._stopped.items()):
            if not stop:
                continue
            mask = self._zone_mask(name, shape)
            frozen = mask if frozen is None else frozen | mask
        return frozen

    def update(self, frame: np.ndarray) -> MotionResult:
        """Learn from ``frame`` and return where it differs from the background."""
        h, w = frame.shape[:2]
        scale = min(1.0, self.work_width / w)
        small = shrink(frame, (round(w * scale), round(h * scale)))
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        self._frames += 1
        if self._frames <= self.warmup_frames:
            self._sub.apply(grey, learningRate=-1.0)
            return MotionResult(np.zeros((0, 4)), 0.0, (w, h))
        raw = self._sub.apply(grey, learningRate=0.0)  # classify only
        self._learn(grey, raw)
        fg = np.where(raw > 200, 255, 0).astype(np.uint8)
        zones = self._all_zones(raw.shape)
        if zones is not None:  # in the zones a "shadow" is kept: it is as often a dark vehicle
            fg[(raw == 127) & zones] = 255
        mask = cv2.morphologyEx(
            cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open), cv2.MORPH_CLOSE, self._close
        )
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        min_px = self.min_area * mask.shape[0] * mask.shape[1]
        rows = [s for s in stats[1:count] if s[cv2.CC_STAT_AREA] >= min_px]
        if not rows:
            return MotionResult(np.zeros((0, 4)), float(mask.mean() / 255), (w, h), mask=mask)
        st = np.array(rows, np.float64)
        boxes = np.stack([st[:, 0], st[:, 1], st[:, 0] + st[:, 2], st[:, 1] + st[:, 3]], axis=1) / scale
        return MotionResult(boxes, float(mask.mean() / 255), (w, h), st[:, 4] / (scale * scale), mask)

    def _learn(self, grey: np.ndarray, raw: np.ndarray) -> None:
        """Update the background from ``grey`` except where it differs (see the module docstring)."""
        differs = raw > 0  # foreground (255) or shadow (127)
        if self._held is None or self._held.shape != differs.shape:
            self._held = np.zeros(differs.shape, np.int32)
        frozen = self._frozen(differs.shape)
        counting = differs if frozen is None else differs & ~frozen
        self._held = np.where(counting, self._held + 1, np.where(differs, self._held, 0))
        hold = differs & (self._held < self.max_hold_frames)
        if frozen is not None:
            hold |= frozen
        if differs.mean() > 0.5:
            hold[:] = False  # the whole scene changed: learn it
        frame = grey
        if hold.any():
            background = self._sub.getBackgroundImage()
            if background is not None and background.shape == grey.shape:
                frame = _selective(grey, background, hold)
        self._sub.apply(frame, learningRate=self.learning_rate)


def _selective(grey: np.ndarray, background: np.ndarray, hold: np.ndarray) -> np.ndarray:
    """``grey`` with the held pixels replaced by the model's own background."""
    return np.where(hold, background, grey).astype(np.uint8)


def merge_regions(boxes: np.ndarray, frame_size: tuple[int, int], margin: float = 0.25) -> list[np.ndarray]:
    """Grow motion boxes by ``margin`` of their size, make them square, and merge those that overlap.

    The result is the list of crops a detector should look at.
    """
    w, h = frame_size
    regions: list[np.ndarray] = []
    for box in boxes:
        side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        regions.append(np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]))
    merged = True
    while merged and len(regions) > 1:
        merged = False
        for i in range(len(regions)):
            for j in range(i + 1, len(regions)):
                a, b = regions[i], regions[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    union = np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])])
                    regions[i] = union
                    del regions[j]
                    merged = True
                    break
            if merged:
                break
    clipped = []
    for r in regions:
        side = min(max(r[2] - r[0], r[3] - r[1]), min(w, h))
        cx, cy = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2
        x1 = float(np.clip(cx - side / 2, 0, w - side))
        y1 = float(np.clip(cy - side / 2, 0, h - side))
        clipped.append(np.array([x1, y1, x1 + side, y1 + side]))
    return clipped
