"""The project's own SSD-format model, decoded in the real interpreter of every installed runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.camera.detectors import SsdDetector
from models.registry import ModelRegistry
from models.runtime import BACKENDS, available_backends
from models.tools.make_ssd_model import GRID, expected_box

FILES = Path(__file__).resolve().parents[2] / "models" / "files"


@pytest.fixture(params=available_backends())
def registry(request: pytest.FixtureRequest) -> ModelRegistry:
    return ModelRegistry(FILES, num_threads=1, backend=request.param)


def _image(red: tuple[int, int], green: tuple[int, int], size: int = 64) -> np.ndarray:
    """RGB float image with a red and a green square, each filling one grid cell."""
    img = np.zeros((1, size, size, 3), np.float32)
    cell = size // GRID
    for (r, c), ch in ((red, 0), (green, 1)):
        img[0, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell, ch] = 1.0
    return img


MODELS = ["tiny_ssd", "tiny_ssd_uint8"]  # float, and int8 with a uint8 image input


@pytest.mark.parametrize("name", MODELS)
def test_raw_outputs_decode_to_the_known_boxes_classes_and_scores(registry: ModelRegistry, name: str) -> None:
    model = registry.load(name)
    detector = SsdDetector(registry.handle(name))
    # Float pixels in 0..1: the registry quantises them for the uint8 model (scale 1/255).
    decoded = detector.decode(model.invoke(_image(red=(2, 5), green=(6, 0))))
    assert len(decoded) == 2
    by_label = {label: (box, score) for box, score, label in decoded}
    assert set(by_label) == {"red", "green"}
    for label, cell in (("red", (2, 5)), ("green", (6, 0))):
        ymin, xmin, ymax, xmax = expected_box(*cell)
        box, score = by_label[label]
        np.testing.assert_allclose(box, (xmin, ymin, xmax, ymax), atol=1e-3 if "uint8" in name else 1e-5)
        assert score > 0.99


def test_empty_image_gives_no_detections(registry: ModelRegistry) -> None:
    model = registry.load("tiny_ssd")
    out = model.invoke(np.zeros((1, 64, 64, 3), np.float32))
    count = next(v for k, v in out.items() if v.shape == (1,))
    assert int(count[0]) == 0
    assert SsdDetector(registry.handle("tiny_ssd")).decode(out) == []


@pytest.mark.parametrize("name", MODELS)
def test_detector_maps_boxes_to_frame_pixels_and_filters_labels(registry: ModelRegistry, name: str) -> None:
    frame = np.zeros((512, 512, 3), np.uint8)
    frame[64 * 1 : 64 * 2, 64 * 3 : 64 * 4] = (0, 0, 255)  # red (BGR) in cell (1, 3)
    frame[64 * 7 : 64 * 8, 64 * 7 : 64 * 8] = (0, 255, 0)  # green in cell (7, 7)
    found = SsdDetector(registry.handle(name)).detect(frame, None)
    assert sorted(d.label for d in found) == ["green", "red"]
    red = next(d for d in found if d.label == "red")
    ymin, xmin, ymax, xmax = expected_box(1, 3)
    np.testing.assert_allclose(red.box, (xmin * 512, ymin * 512, xmax * 512, ymax * 512), atol=0.5)
    only_green = SsdDetector(registry.handle(name), labels=["green"]).detect(frame, None)
    assert [d.label for d in only_green] == ["green"]


def test_detector_on_a_motion_crop(registry: ModelRegistry) -> None:
    """Gated: only the crop around the moving square is given to the model."""
    from models.camera.motion import MotionResult

    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[300:340, 900:940] = (0, 0, 255)
    detector = SsdDetector(registry.handle("tiny_ssd"))
    found = detector.detect(frame, MotionResult(np.array([[900.0, 300.0, 940.0, 340.0]]), 0.01, (1280, 720)))
    # In the 60 px crop the square fills most of the model's cells, each reporting it.
    assert found
    assert {d.label for d in found} == {"red"}
    for d in found:
        cx, cy = d.centre
        assert 880 < cx < 960
        assert 280 < cy < 360
    # Whole-frame, the 40 px square is too small for the 64x64 model's 8x8 cells: gating helps here.
    assert detector.detect(frame, None) == []


def test_runtimes_agree() -> None:
    backends = available_backends()
    outputs = []
    for backend in backends:
        model = ModelRegistry(FILES, num_threads=1, backend=backend).load("tiny_ssd")
        outputs.append(model.invoke(_image(red=(0, 0), green=(7, 7))))
    for other in outputs[1:]:
        for key in outputs[0]:
            np.testing.assert_allclose(outputs[0][key], other[key], atol=1e-6)
    assert backends == [b for b in BACKENDS if b in backends]  # LiteRT preferred when present


def test_detector_follows_a_hot_replacement(tmp_path: Path) -> None:
    """A new manifest version (relabelled classes) takes effect on the next frame without a restart."""
    import shutil

    import yaml

    for suffix in (".tflite", ".yaml"):
        shutil.copyfile(FILES / f"tiny_ssd{suffix}", tmp_path / f"tiny_ssd{suffix}")
    registry = ModelRegistry(tmp_path, num_threads=1)
    detector = SsdDetector(registry.handle("tiny_ssd"))
    frame = np.zeros((512, 512, 3), np.uint8)
    frame[0:64, 0:64] = (0, 0, 255)
    assert [d.label for d in detector.detect(frame, None)] == ["red"]
    data = yaml.safe_load((tmp_path / "tiny_ssd.yaml").read_text())
    data["version"] = "1.0.1"
    data["labels"] = ["nen", "do", "xanh"]
    (tmp_path / "tiny_ssd.yaml").write_text(yaml.safe_dump(data))
    assert [(r.version, r.error) for r in registry.refresh()] == [("1.0.1", None)]
    assert [d.label for d in detector.detect(frame, None)] == ["do"]
    assert detector.meta() == {"model": "tiny_ssd", "model_version": "1.0.1"}
