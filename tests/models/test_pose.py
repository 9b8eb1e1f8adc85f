"""MediaPipe pose and face detectors on photographs shipped inside scikit-image (no download)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from models.camera.detectors import BlazeDetector
from models.registry import ModelRegistry

FILES = Path(__file__).resolve().parents[2] / "models" / "files"
# Photographs in scikit-image with no person in them (a cat, a coffee cup, a rocket on its pad,
# a horse silhouette, coins, the moon, a clock, brick and grass textures).
NO_PEOPLE = ["coffee", "rocket", "chelsea", "horse", "coins", "moon", "clock", "brick", "grass"]


def _bgr(name: str) -> np.ndarray:
    img = getattr(data, name)()
    if img.dtype != np.uint8:
        img = (img * 255).astype(np.uint8) if img.max() <= 1 else img.astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(FILES, num_threads=1)


def test_pose_detector_finds_the_astronaut(registry: ModelRegistry) -> None:
    detector = BlazeDetector(registry.handle("pose_detection"))
    found = detector.detect(_bgr("astronaut"), None)
    assert len(found) == 1
    person = found[0]
    assert person.label == "person"
    assert person.score > 0.7
    # BlazePose's box is around the head; Eileen Collins' face is left of centre in the top half.
    cx, cy = person.centre
    assert 150 < cx < 300
    assert 100 < cy < 260
    assert person.keypoints is not None
    assert person.keypoints.shape == (4, 2)
    # The hip-centre keypoint lies below the head box.
    assert person.keypoints[0, 1] > person.box[3]


def test_pose_detector_finds_the_cameraman(registry: ModelRegistry) -> None:
    detector = BlazeDetector(registry.handle("pose_detection"))
    assert len(detector.detect(_bgr("camera"), None)) == 1


@pytest.mark.parametrize("name", NO_PEOPLE)
def test_pose_detector_finds_nobody_without_people(registry: ModelRegistry, name: str) -> None:
    detector = BlazeDetector(registry.handle("pose_detection"))
    assert detector.detect(_bgr(name), None) == []


@pytest.mark.parametrize("model", ["face_detection_short_range", "face_detection_full_range"])
def test_face_detectors_find_one_face_on_the_astronaut_and_none_on_coffee(
    registry: ModelRegistry, model: str
) -> None:
    detector = BlazeDetector(registry.handle(model))
    faces = detector.detect(_bgr("astronaut"), None)
    assert len(faces) == 1
    assert faces[0].keypoints is not None
    assert faces[0].keypoints.shape == (6, 2)
    cx, cy = faces[0].centre
    assert 170 < cx < 290
    assert 60 < cy < 200
    assert detector.detect(_bgr("coffee"), None) == []


def test_person_is_found_in_a_large_frame_by_motion_crops(registry: ModelRegistry) -> None:
    """The astronaut pasted into a 1280x720 frame: found whole-frame and via the motion crop."""
    from models.camera.motion import MotionResult

    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[100:612, 600:1112] = _bgr("astronaut")
    detector = BlazeDetector(registry.handle("pose_detection"))
    motion = MotionResult(np.array([[620.0, 120.0, 1100.0, 600.0]]), 0.2, (1280, 720))
    for result in (detector.detect(frame, None), detector.detect(frame, motion)):
        assert len(result) == 1
        cx, cy = result[0].centre
        assert 600 + 150 < cx < 600 + 300
        assert 100 + 100 < cy < 100 + 260
