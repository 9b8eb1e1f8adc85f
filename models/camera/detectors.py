"""Detectors: what turns a frame (or the moving parts of it) into boxes.

Three kinds share the :class:`Detector` protocol:

* :class:`MotionBlobDetector`: every moving blob is an object; no model. The default for fixed
  traffic cameras, where anything that moves on the carriageway is a road user.
* :class:`SsdDetector`: any SSD / EfficientDet-Lite style ``.tflite`` whose outputs come from the
  ``TFLite_Detection_PostProcess`` op (boxes, classes, scores, count), as a site supplies it.
* :class:`BlazeDetector`: MediaPipe's pose and face detectors (raw regressors and logits), decoded
  with numpy anchors and weighted non-maximum suppression.

Model detectors run on square crops around the motion regions when given a :class:`MotionResult`,
and on the whole frame otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from kernel.errors import ModelError
from models.camera.anchors import decode_blaze, ssd_anchors
from models.camera.geometry import nms
from models.camera.motion import MotionResult, merge_regions, shrink
from models.registry import LoadedModel, ModelHandle


@dataclass(frozen=True)
class Detection:
    """One object: box ``x1, y1, x2, y2`` in frame pixels, score 0..1, label, optional keypoints (K, 2)."""

    box: tuple[float, float, float, float]
    score: float
    label: str
    keypoints: np.ndarray | None = None

    @property
    def centre(self) -> tuple[float, float]:
        """The box centre."""
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


class Detector(Protocol):
    """Finds objects in a frame; ``needs_motion`` says it cannot work without the motion gate."""

    kind: str
    needs_motion: bool

    def detect(self, frame: np.ndarray, motion: MotionResult | None) -> list[Detection]:
        """Objects in ``frame``; with ``motion``, look only where something moved."""
        ...

    def meta(self) -> dict[str, str]:
        """What Readings built from this detector's output carry (model name and version)."""
        ...


class MotionBlobDetector:
    """Moving blobs from the motion gate are the objects (no model)."""

    kind = "motion"
    needs_motion = True

    def __init__(self, label: str = "object", min_area: float = 0.0) -> None:
        self.label = label
        self.min_area = min_area

    def detect(self, frame: np.ndarray, motion: MotionResult | None) -> list[Detection]:
        """One detection per motion blob at least ``min_area`` (fraction of the frame) large."""
        if motion is None:
            return []
        h, w = frame.shape[:2]
        out = []
        for box in motion.boxes:
            if (box[2] - box[0]) * (box[3] - box[1]) < self.min_area * w * h:
                continue
            out.append(
                Detection((float(box[0]), float(box[1]), float(box[2]), float(box[3])), 1.0, self.label)
            )
        return out

    def meta(self) -> dict[str, str]:
        """No model: the detector kind only."""
        return {"model": "motion-blob", "model_version": "mog2"}


def _crops(
    frame: np.ndarray, motion: MotionResult | None, max_regions: int, full_above: float
) -> list[np.ndarray]:
    """The parts of the frame to run a model on: at most ``max_regions`` squares around what moved.

    More regions than that are replaced by one square around all of them; when the squares would
    cover more than ``full_above`` of the frame, the whole frame is used (one invoke).
    """
    h, w = frame.shape[:2]
    whole = [np.array([0.0, 0.0, float(w), float(h)])]
    if motion is None:
        return whole
    regions = merge_regions(motion.boxes, (w, h))
    if len(regions) > max_regions:
        stacked = np.array(regions)
        union = np.array([[*stacked[:, :2].min(axis=0), *stacked[:, 2:].max(axis=0)]])
        regions = merge_regions(union, (w, h), margin=0.0)
    covered = sum((r[2] - r[0]) * (r[3] - r[1]) for r in regions)
    if covered > full_above * w * h:
        return whole
    return regions


def _letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping the aspect, then pad to a square; returns image, side, pad_x, pad_y.

    ``side`` is the padded square's side in the input's pixels, so a normalised coordinate ``u``
    in the model's square maps back to ``u * side - pad`` in the input.
    """
    h, w = image.shape[:2]
    side = max(h, w)
    scale = size / side
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = shrink(image, (nw, nh))
    left, top = (size - nw) // 2, (size - nh) // 2
    square = cv2.copyMakeBorder(
        small, top, size - nh - top, left, size - nw - left, cv2.BORDER_CONSTANT, value=0
    )
    return square, side, left / scale, top / scale


class _ModelDetector(ABC):
    """What the two model-backed detectors share: the model handle, crops, thresholds."""

    needs_motion = False

    def __init__(
        self,
        model: ModelHandle,
        min_score: float | None = None,
        labels: list[str] | None = None,
        max_regions: int = 1,
        full_frame_above: float = 0.5,
    ) -> None:
        self.model = model
        self._min_score = min_score
        self.only_labels = set(labels) if labels else None
        self.max_regions = max_regions
        self.full_frame_above = full_frame_above
        self._configure(model.current)

    def _configure(self, loaded: LoadedModel) -> None:
        """Read the decoder settings of ``loaded``; called again after a hot replacement."""
        manifest = loaded.manifest
        self.params: dict[str, Any] = dict(manifest.params)
        self.min_score = float(
            self._min_score if self._min_score is not None else self.params.get("min_score", 0.5)
        )
        shape = manifest.inputs[0].shape
        if len(shape) != 4 or shape[3] != 3:
            raise ModelError(
                f"{manifest.name}: a camera detector needs an input of shape [1, H, W, 3], not {shape}"
            )
        self.input_hw = (shape[1], shape[2])
        self._loaded = loaded

    def meta(self) -> dict[str, str]:
        """The model in service now."""
        return self.model.current.meta()

    def _to_input(self, rgb: np.ndarray) -> np.ndarray:
        spec = self._loaded.manifest.inputs[0]
        if spec.dtype == "uint8":
            return rgb[None].astype(np.uint8)
        if spec.dtype == "int8":
            return (rgb[None].astype(np.int16) - 128).astype(np.int8)
        lo, hi = self.params.get("input_range", [-1.0, 1.0])
        return (rgb[None].astype(np.float32) / 255.0 * (hi - lo) + lo).astype(np.float32)

    def detect(self, frame: np.ndarray, motion: MotionResult | None) -> list[Detection]:
        """Run on each crop, map boxes back to the frame, and drop duplicates across crops."""
        current = self.model.current
        if current is not self._loaded:
            self._configure(current)
        found: list[Detection] = []
        for crop in _crops(frame, motion, self.max_regions, self.full_frame_above):
            x1, y1, x2, y2 = (round(float(v)) for v in crop)
            found.extend(self._detect_crop(frame[y1:y2, x1:x2], x1, y1))
        if len(found) < 2:
            return found
        boxes = np.array([d.box for d in found])
        scores = np.array([d.score for d in found])
        keep_boxes, _, _ = nms(boxes, scores, 0.5)
        kept = {tuple(np.round(b, 6)) for b in keep_boxes}
        return [d for d in found if tuple(np.round(d.box, 6)) in kept]

    @abstractmethod
    def _detect_crop(self, image: np.ndarray, ox: int, oy: int) -> list[Detection]:
        """Detections in one BGR crop whose top-left corner is at ``(ox, oy)`` in the frame."""


class BlazeDetector(_ModelDetector):
    """MediaPipe BlazePose / BlazeFace detectors: anchors, decoding and weighted NMS in numpy."""

    kind = "blaze"

    def _configure(self, loaded: LoadedModel) -> None:
        super()._configure(loaded)
        if self.params.get("decoder") != "blaze" or "anchors" not in self.params:
            raise ModelError(f"{loaded.name}: the manifest's params do not describe a blaze decoder")
        self.anchors = ssd_anchors(self.params["anchors"])
        self.label = (loaded.manifest.labels or ["object"])[0]

    def _detect_crop(self, image: np.ndarray, ox: int, oy: int) -> list[Detection]:
        size = self.input_hw[0]
        square, side, pad_x, pad_y = _letterbox(image, size)
        tensor = cv2.cvtColor(square, cv2.COLOR_BGR2RGB)
        out = list(self._loaded.invoke(self._to_input(tensor)).values())
        params = {**self.params, "min_score": self.min_score}
        boxes, scores, kps = decode_blaze(out[0], out[1], self.anchors, params)
        boxes, scores, kept_kps = nms(boxes, scores, float(self.params.get("nms_iou", 0.3)), True, kps)
        result = []
        for box, score, kp in zip(
            boxes, scores, kept_kps if kept_kps is not None else [None] * len(boxes), strict=True
        ):
            px = box * side - np.array([pad_x, pad_y, pad_x, pad_y]) + np.array([ox, oy, ox, oy])
            points = None
            if kp is not None and kp.size:
                points = kp.reshape(-1, 2) * side - np.array([pad_x, pad_y]) + np.array([ox, oy])
            result.append(Detection(tuple(float(v) for v in px), float(score), self.label, points))  # type: ignore[arg-type]
        return result


class SsdDetector(_ModelDetector):
    """Detectors ending in ``TFLite_Detection_PostProcess``: boxes ``ymin, xmin, ymax, xmax`` (0..1),
    class indices, scores and a count, in that output order unless ``params.outputs`` says otherwise.

    ``params.label_offset`` is added to a class index before looking it up in ``labels``.
    """

    kind = "ssd"

    def _configure(self, loaded: LoadedModel) -> None:
        super()._configure(loaded)
        names = [s.name for s in loaded.manifest.outputs]
        order = self.params.get("outputs", {"boxes": 0, "classes": 1, "scores": 2, "count": 3})
        if len(names) != 4:
            raise ModelError(
                f"{loaded.name}: an SSD detector needs 4 outputs (boxes, classes, scores, count)"
            )
        self.out_names = {key: names[int(idx)] for key, idx in order.items()}
        self.labels = list(loaded.manifest.labels)
        self.label_offset = int(self.params.get("label_offset", 0))

    def _label(self, cls: int) -> str:
        idx = cls + self.label_offset
        return self.labels[idx] if 0 <= idx < len(self.labels) else str(cls)

    def decode(
        self, outputs: dict[str, np.ndarray]
    ) -> list[tuple[tuple[float, float, float, float], float, str]]:
        """Normalised ``x1, y1, x2, y2`` boxes, scores and labels above ``min_score``."""
        boxes = outputs[self.out_names["boxes"]].reshape(-1, 4)
        classes = outputs[self.out_names["classes"]].reshape(-1)
        scores = outputs[self.out_names["scores"]].reshape(-1)
        count = int(np.asarray(outputs[self.out_names["count"]]).reshape(-1)[0])
        result = []
        for i in range(min(count, len(scores))):
            label = self._label(round(float(classes[i])))
            if scores[i] < self.min_score or (self.only_labels and label not in self.only_labels):
                continue
            ymin, xmin, ymax, xmax = (float(v) for v in boxes[i])
            result.append(((xmin, ymin, xmax, ymax), float(scores[i]), label))
        return result

    def _detect_crop(self, image: np.ndarray, ox: int, oy: int) -> list[Detection]:
        h, w = image.shape[:2]
        small = shrink(image, (self.input_hw[1], self.input_hw[0]))
        tensor = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        found = []
        for (x1, y1, x2, y2), score, label in self.decode(self._loaded.invoke(self._to_input(tensor))):
            box = (ox + x1 * w, oy + y1 * h, ox + x2 * w, oy + y2 * h)
            found.append(Detection(box, score, label))
        return found
