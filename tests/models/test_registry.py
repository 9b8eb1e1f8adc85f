"""The model registry: checked loading, refusal of bad models, hot replacement, (de)quantisation."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from kernel.errors import ModelError
from models.manifest import Quantization, TensorSpec, read_manifest, sha256_hex
from models.registry import ModelRegistry, dequantize, quantize
from models.runtime import available_backends, select_backend

FILES = Path(__file__).resolve().parents[2] / "models" / "files"
FACE = "face_detection_short_range"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    for suffix in (".tflite", ".yaml"):
        shutil.copyfile(FILES / f"{FACE}{suffix}", tmp_path / f"{FACE}{suffix}")
    return tmp_path


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / f"{FACE}.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _face_input() -> np.ndarray:
    return np.zeros((1, 128, 128, 3), np.float32)


def test_vendored_models_load_and_match_their_manifests() -> None:
    registry = ModelRegistry(FILES, num_threads=1)
    assert {"pose_detection", FACE, "face_detection_full_range"} <= set(registry.available())
    for name in ("pose_detection", FACE, "face_detection_full_range"):
        model = registry.load(name)
        assert model.meta() == {"model": name, "model_version": "0.10.21"}
        assert model.num_threads == 1
        assert model.manifest.licence == "Apache-2.0"
        assert (FILES / str(model.manifest.licence_file)).is_file()
        out = model.invoke(np.zeros(model.manifest.inputs[0].shape, np.float32))
        assert [v.shape for v in out.values()] == [tuple(s.shape) for s in model.manifest.outputs]


def test_wrong_hash_is_refused_and_the_running_model_stays(model_dir: Path) -> None:
    registry = ModelRegistry(model_dir, num_threads=1)
    running = registry.load(FACE)
    _edit_manifest(model_dir, sha256="0" * 64, version="2")
    with pytest.raises(ModelError, match=r"sha256 [0-9a-f]+, manifest says 0000"):
        registry.load(FACE)
    assert registry.get(FACE) is running
    assert registry.get(FACE).version == "0.10.21"


def test_wrong_shapes_are_refused_and_the_running_model_stays(model_dir: Path) -> None:
    registry = ModelRegistry(model_dir, num_threads=1)
    running = registry.load(FACE)
    data = yaml.safe_load((model_dir / f"{FACE}.yaml").read_text())
    data["inputs"][0]["shape"] = [1, 224, 224, 3]
    data["outputs"][1]["dtype"] = "uint8"
    (model_dir / f"{FACE}.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError) as err:
        registry.load(FACE)
    assert "inputs[0].shape: manifest says [1, 224, 224, 3], model has [1, 128, 128, 3]" in str(err.value)
    assert "outputs[1].dtype: manifest says uint8, model has float32" in str(err.value)
    assert registry.get(FACE) is running
    assert running.invoke(_face_input())["classificators"].shape == (1, 896, 1)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_file_is_refused_and_the_running_model_stays(model_dir: Path, damage: str) -> None:
    registry = ModelRegistry(model_dir, num_threads=1)
    running = registry.load(FACE)
    content = (model_dir / f"{FACE}.tflite").read_bytes()
    bad = content[: len(content) // 3] if damage == "truncated" else b"\x00not a flatbuffer" * 64
    (model_dir / f"{FACE}.tflite").write_bytes(bad)
    with pytest.raises(ModelError, match="sha256"):
        registry.load(FACE)
    # Even with a manifest that vouches for the damaged bytes, the runtime refuses them.
    _edit_manifest(model_dir, sha256=sha256_hex(bad))
    with pytest.raises(ModelError, match="cannot load the model"):
        registry.load(FACE)
    assert registry.get(FACE) is running


def test_bad_manifest_names_the_field(model_dir: Path) -> None:
    _edit_manifest(model_dir, licence="", inputs=[])
    with pytest.raises(ModelError) as err:
        read_manifest(model_dir / f"{FACE}.yaml")
    assert "licence:" in str(err.value)
    assert "inputs:" in str(err.value)


def test_hot_replacement_while_invoking(model_dir: Path) -> None:
    registry = ModelRegistry(model_dir, num_threads=1)
    handle = registry.handle(FACE)
    errors: list[BaseException] = []
    versions: set[str] = set()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                model = handle.current
                model.invoke(_face_input())
                versions.add(model.version)
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        _edit_manifest(model_dir, version="0.10.21-site2")
        results = registry.refresh()
        assert [(r.name, r.version, r.error) for r in results] == [(FACE, "0.10.21-site2", None)]
        # A refused update is reported and leaves the new version in service.
        _edit_manifest(model_dir, sha256="f" * 64, version="bad")
        results = registry.refresh()
        assert results[0].version is None
        assert "sha256" in str(results[0].error)
        assert registry.refresh() == []  # not retried until the files change again
        deadline = threading.Event()
        deadline.wait(0.3)
    finally:
        stop.set()
        thread.join(10)
    assert errors == []
    assert handle.current.version == "0.10.21-site2"
    assert "0.10.21-site2" in versions


def test_quantisation_round_trip() -> None:
    spec = TensorSpec(name="x", shape=[4], dtype="int8", quantization=Quantization(scale=0.5, zero_point=-3))
    q = quantize(np.array([0.0, 1.0, -70.0, 100.0], np.float32), spec)
    assert q.dtype == np.int8
    assert q.tolist() == [-3, -1, -128, 127]
    assert dequantize(q, spec).tolist() == [0.0, 1.0, -62.5, 65.0]
    already = np.array([5, 6, 7, 8], np.int8)
    assert quantize(already, spec).tolist() == [5, 6, 7, 8]


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert available_backends()[0] == select_backend().name
    monkeypatch.setenv("KBE_TFLITE_BACKEND", "nonsense")
    with pytest.raises(ModelError, match="unknown TFLite backend"):
        select_backend()


def test_wrong_input_shape_at_invoke_is_a_model_error() -> None:
    model = ModelRegistry(FILES, num_threads=1).load(FACE)
    with pytest.raises(ModelError, match="has shape \\[1, 64, 64, 3\\], needs \\[1, 128, 128, 3\\]"):
        model.invoke(np.zeros((1, 64, 64, 3), np.float32))


def test_probe_process_refuses_a_damaged_file_without_touching_this_process(model_dir: Path) -> None:
    """With ``probe`` the file is opened in a child first (default with tflite-runtime, which can crash)."""
    registry = ModelRegistry(model_dir, num_threads=1, probe=True)
    running = registry.load(FACE)
    bad = (model_dir / f"{FACE}.tflite").read_bytes()[:5000]
    (model_dir / f"{FACE}.tflite").write_bytes(bad)
    _edit_manifest(model_dir, sha256=sha256_hex(bad))
    with pytest.raises(ModelError, match="probe process"):
        registry.load(FACE)
    assert registry.get(FACE) is running
