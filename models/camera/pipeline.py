"""One camera's processing: motion gate, detector, tracker, per frame. Synchronous and pixel-local.

:class:`CameraPipeline.process` takes a BGR frame and returns a :class:`FrameResult` holding only
numbers; frames are never stored.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from models.camera.detectors import Detection, Detector
from models.camera.motion import MotionGate, MotionResult
from models.camera.tracker import Tracker, TrackState


@dataclass(frozen=True)
class FrameResult:
    """What one frame gave: detections, tracker state, whether the detector ran and how long it took."""

    state: TrackState
    detections: list[Detection]
    detector_ran: bool
    moving: bool
    detect_s: float
    total_s: float


class CameraPipeline:
    """Frame -> (motion gate) -> detector -> tracker.

    With ``gate`` set, the detector runs only on frames where something moved and, for model
    detectors, only on crops around the moving regions; a still frame holds the tracks as they
    are. A motion-blob detector always needs the gate (it *is* the gate's output). A track the
    detector lost is kept while at least ``present_fraction`` of its box still differs from the
    gate's background (a stopped vehicle).
    """

    present_fraction = 0.35

    def __init__(self, detector: Detector, tracker: Tracker, gate: MotionGate | None = None) -> None:
        if detector.needs_motion and gate is None:
            gate = MotionGate()
        self.detector = detector
        self.tracker = tracker
        self.gate = gate
        self.frames = 0
        self.detector_runs = 0

    def process(self, frame: np.ndarray, ts: float) -> FrameResult:
        """Process one BGR frame taken at ``ts`` (seconds)."""
        start = time.perf_counter()
        size = (frame.shape[1], frame.shape[0])
        self.frames += 1
        motion = self.gate.update(frame) if self.gate is not None else None
        if motion is not None and not motion.moving:
            state = self.tracker.hold(ts)
            return FrameResult(state, [], False, False, 0.0, time.perf_counter() - start)
        t0 = time.perf_counter()
        detections = self.detector.detect(frame, motion)
        detect_s = time.perf_counter() - t0
        self.detector_runs += 1
        present = None
        if motion is not None and motion.mask is not None:
            present = functools.partial(_present, motion, self.present_fraction)
        state = self.tracker.update(detections, ts, size, present)
        return FrameResult(state, detections, True, motion is not None, detect_s, time.perf_counter() - start)


def _present(motion: MotionResult, fraction: float, box: np.ndarray) -> bool:
    """Whether at least ``fraction`` of ``box`` still differs from the background."""
    return motion.covers(box) >= fraction
