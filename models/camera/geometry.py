"""Boxes and non-maximum suppression in numpy. Boxes are ``[x1, y1, x2, y2]`` rows."""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N,4) with every box in ``b`` (M,4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    weighted: bool = False,
    extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Non-maximum suppression, best score first.

    Plain NMS keeps the best box of each overlapping group. Weighted NMS (as MediaPipe's
    ``WEIGHTED`` mode) replaces it by the score-weighted mean of the group, which steadies the box;
    ``extra`` (N,K), e.g. keypoints, is averaged the same way. Returns boxes, scores, extra.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep_boxes, keep_scores, keep_extra = [], [], []
    remaining = order
    while remaining.size:
        best = remaining[0]
        overlaps = iou_matrix(boxes[best : best + 1], boxes[remaining])[0]
        group = remaining[overlaps > iou_threshold]
        if best not in group:
            group = np.concatenate(([best], group))
        if weighted:
            w = scores[group][:, None]
            keep_boxes.append((boxes[group] * w).sum(0) / w.sum())
            if extra is not None:
                keep_extra.append((extra[group] * w).sum(0) / w.sum())
        else:
            keep_boxes.append(boxes[best])
            if extra is not None:
                keep_extra.append(extra[best])
        keep_scores.append(scores[best])
        remaining = remaining[overlaps <= iou_threshold]
        remaining = remaining[remaining != best]
    if not keep_boxes:
        empty_extra = None if extra is None else np.zeros((0, extra.shape[1]))
        return np.zeros((0, 4)), np.zeros(0), empty_extra
    out_extra = None if extra is None else np.array(keep_extra)
    return np.array(keep_boxes), np.array(keep_scores), out_extra
