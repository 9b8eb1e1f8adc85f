"""SSD anchors and the decoding of BlazeFace / BlazePose style detector outputs, in numpy.

The anchor scheme is the one MediaPipe's ``SsdAnchorsCalculator`` documents: one feature map per
distinct stride (layers sharing a stride are merged), ``len(aspect_ratios)`` anchors per cell plus
one for ``interpolated_scale_aspect_ratio`` when it is positive, centres at
``(x + anchor_offset) / feature_width``; with ``fixed_anchor_size`` every anchor is 1x1 in
normalised units, so a regressed box is ``centre + raw / coord_scale`` and ``size = raw / coord_scale``.
Written from the MediaPipe calculator options (github.com/google-ai-edge/mediapipe,
``mediapipe/calculators/tflite/ssd_anchors_calculator.proto``); no code copied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) / 2
    return min_scale + (max_scale - min_scale) * index / (count - 1)


def ssd_anchors(options: Mapping[str, Any]) -> np.ndarray:
    """Anchors as (N, 4) rows of ``cx, cy, w, h`` in normalised image coordinates."""
    size = int(options["input_size"])
    strides = [int(s) for s in options["strides"]]
    ratios = [float(r) for r in options.get("aspect_ratios", [1.0])]
    interp = float(options.get("interpolated_scale_aspect_ratio", 1.0))
    offset = float(options.get("anchor_offset", 0.5))
    fixed = bool(options.get("fixed_anchor_size", True))
    min_scale = float(options.get("min_scale", 0.1484375))
    max_scale = float(options.get("max_scale", 0.75))
    rows: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        shapes: list[tuple[float, float]] = []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            scale = _scale(min_scale, max_scale, last, len(strides))
            for ratio in ratios:
                shapes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if interp > 0:
                nxt = (
                    1.0 if last == len(strides) - 1 else _scale(min_scale, max_scale, last + 1, len(strides))
                )
                mid = math.sqrt(scale * nxt)
                shapes.append((mid * math.sqrt(interp), mid / math.sqrt(interp)))
            last += 1
        cells = math.ceil(size / strides[layer])
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = np.stack([(xs.ravel() + offset) / cells, (ys.ravel() + offset) / cells], axis=1)
        wh = np.ones((len(shapes), 2)) if fixed else np.array(shapes)
        per_cell = np.concatenate(
            [np.repeat(centres, len(shapes), axis=0), np.tile(wh, (centres.shape[0], 1))], axis=1
        )
        rows.append(per_cell)
        layer = last
    return np.concatenate(rows, axis=0)


def decode_blaze(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, params: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode regressors (N, 4 + 2K) and logits (N, 1) into boxes above ``min_score``.

    Returns boxes (M, 4) as normalised ``x1, y1, x2, y2``, scores (M,) and keypoints (M, 2K).
    """
    scale = float(params["coord_scale"])
    clip = float(params.get("score_clip", 100.0))
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -clip, clip)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= float(params.get("min_score", 0.5))
    raw = raw_boxes.reshape(raw_boxes.shape[-2], raw_boxes.shape[-1])[keep].astype(np.float64)
    anc = anchors[keep]
    cx = raw[:, 0] / scale * anc[:, 2] + anc[:, 0]
    cy = raw[:, 1] / scale * anc[:, 3] + anc[:, 1]
    w = raw[:, 2] / scale * anc[:, 2]
    h = raw[:, 3] / scale * anc[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    num_kp = int(params.get("num_keypoints", 0))
    kps = raw[:, 4 : 4 + 2 * num_kp].copy()
    kps[:, 0::2] = kps[:, 0::2] / scale * anc[:, 2:3] + anc[:, 0:1]
    kps[:, 1::2] = kps[:, 1::2] / scale * anc[:, 3:4] + anc[:, 1:2]
    return boxes, scores[keep], kps
