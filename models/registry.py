"""The model registry: checked loading, (de)quantising invoke, and hot replacement.

Typical use::

    registry = ModelRegistry(Path("models/files"), num_threads=2)
    model = registry.load("pose_detection")          # LoadedModel, or ModelError
    outputs = model.invoke({"input_1": image})         # float arrays in, float arrays out
    handle = registry.handle("pose_detection")         # follows replacements
    registry.refresh()                                 # reload models whose files changed

A replacement is loaded and checked completely before it is swapped in with one reference
assignment; if it is refused the previous model keeps running. Nothing is ever downloaded: a model
is a ``.tflite`` file and its manifest in the registry's directory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernel.errors import ModelError
from models.manifest import Manifest, TensorSpec, check_tensors, read_manifest, sha256_hex
from models.runtime import Backend, default_threads, make_interpreter, probe_in_child, select_backend

Inputs = Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray


def quantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float values to the tensor's integer type (or a plain cast when it is not quantised)."""
    dtype = np.dtype(spec.dtype)
    if spec.quantization is None or values.dtype == dtype:
        return np.ascontiguousarray(values, dtype=dtype)
    q = np.round(values / spec.quantization.scale) + spec.quantization.zero_point
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Integer tensor values to float32 (float tensors are returned as they are)."""
    if spec.quantization is None:
        return values
    return (values.astype(np.float32) - spec.quantization.zero_point) * np.float32(spec.quantization.scale)


class LoadedModel:
    """A checked model in an interpreter. ``invoke`` is serialised: one call at a time per model."""

    def __init__(
        self, manifest: Manifest, path: Path, interpreter: Any, backend: str, num_threads: int
    ) -> None:
        self.manifest = manifest
        self.path = path
        self.backend = backend
        self.num_threads = num_threads
        self.loaded_at = time.time()
        self.last_invoke_s = 0.0
        self._interp = interpreter
        self._in_idx = [d["index"] for d in interpreter.get_input_details()]
        self._out_idx = [d["index"] for d in interpreter.get_output_details()]
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The manifest's model name."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """The manifest's model version."""
        return self.manifest.version

    def meta(self) -> dict[str, str]:
        """``{"model": name, "model_version": version}`` for Readings."""
        return self.manifest.meta()

    def _ordered(self, inputs: Inputs) -> list[np.ndarray]:
        specs = self.manifest.inputs
        if isinstance(inputs, np.ndarray):
            arrays = [inputs]
        elif isinstance(inputs, Mapping):
            missing = [s.name for s in specs if s.name not in inputs]
            if missing:
                raise ModelError(f"{self.name}: missing inputs {missing}")
            arrays = [np.asarray(inputs[s.name]) for s in specs]
        else:
            arrays = [np.asarray(a) for a in inputs]
        if len(arrays) != len(specs):
            raise ModelError(f"{self.name}: expects {len(specs)} inputs, got {len(arrays)}")
        return arrays

    def invoke(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """Run the model; float inputs are quantised and quantised outputs are returned as float32.

        ``inputs`` is one array, a list in manifest order, or a mapping from input name. The result
        maps each output's manifest name to a fresh array.
        """
        arrays = [quantize(a, s) for a, s in zip(self._ordered(inputs), self.manifest.inputs, strict=True)]
        raw = self.invoke_raw(arrays)
        return {
            spec.name: dequantize(value, spec) for spec, value in zip(self.manifest.outputs, raw, strict=True)
        }

    def invoke_raw(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the model on arrays already in the tensors' types; outputs as the model gives them."""
        specs = self.manifest.inputs
        for spec, arr in zip(specs, arrays, strict=True):
            want = tuple(arr.shape)
            if len(want) != len(spec.shape) or any(
                s not in (-1, w) for s, w in zip(spec.shape, want, strict=True)
            ):
                raise ModelError(
                    f"{self.name}: input {spec.name!r} has shape {list(want)}, needs {spec.shape}"
                )
        with self._lock:
            start = time.perf_counter()
            try:
                for idx, arr in zip(self._in_idx, arrays, strict=True):
                    self._interp.set_tensor(idx, arr)
                self._interp.invoke()
                out = [self._interp.get_tensor(idx).copy() for idx in self._out_idx]
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{self.name}: invoke failed: {exc}") from exc
            self.last_invoke_s = time.perf_counter() - start
        return out


def load_model(
    manifest_path: Path,
    num_threads: int | None = None,
    backend: Backend | None = None,
    probe: bool | None = None,
) -> LoadedModel:
    """Load one model from its manifest, checking hash and tensors; refuse it with :class:`ModelError`.

    ``probe`` opens the file in a child process first (default: with tflite-runtime only, whose
    loader can crash on a damaged file).
    """
    manifest = read_manifest(manifest_path)
    model_path = manifest_path.parent / manifest.filename
    try:
        content = model_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{manifest.name}: cannot read {model_path}: {exc.strerror or exc}") from exc
    digest = sha256_hex(content)
    if digest != manifest.sha256:
        raise ModelError(
            f"{manifest.name}: {model_path.name} has sha256 {digest}, "
            f"manifest says {manifest.sha256}; refused"
        )
    backend = backend or select_backend()
    if backend.name == "tflite_runtime" if probe is None else probe:
        probe_in_child(content, backend)
    interp = make_interpreter(content, num_threads, backend)
    problems = check_tensors("inputs", manifest.inputs, interp.get_input_details())
    problems += check_tensors("outputs", manifest.outputs, interp.get_output_details())
    if problems:
        raise ModelError(
            f"{manifest.name}: tensors do not match the manifest, refused: " + "; ".join(problems)
        )
    threads = num_threads or default_threads()
    return LoadedModel(manifest, model_path, interp, backend.name, threads)


@dataclass(frozen=True)
class ReloadResult:
    """What :meth:`ModelRegistry.refresh` did with one model."""

    name: str
    version: str | None
    error: str | None


class ModelHandle:
    """A stable reference to whatever version of a model is current; survives hot replacement."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self._registry = registry
        self.name = name

    @property
    def current(self) -> LoadedModel:
        """The model in service now."""
        return self._registry.get(self.name)

    def invoke(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """Invoke the current model."""
        return self.current.invoke(inputs)


class ModelRegistry:
    """Models in one directory, each ``<name>.yaml`` beside its ``.tflite``.

    ``num_threads`` (default: all cores) and ``backend`` (default: LiteRT, else tflite-runtime)
    apply to every model the registry loads.
    """

    def __init__(
        self,
        directory: Path | str,
        num_threads: int | None = None,
        backend: str | None = None,
        probe: bool | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.probe = probe
        self.num_threads = num_threads
        self.backend = select_backend(backend)
        self._models: dict[str, LoadedModel] = {}
        self._stamps: dict[str, tuple[float, ...]] = {}
        self._lock = threading.Lock()

    def manifest_path(self, name: str) -> Path:
        """Where the manifest of ``name`` lives."""
        return self.directory / f"{name}.yaml"

    def available(self) -> list[str]:
        """Names of the models whose manifests are in the directory."""
        return sorted(p.stem for p in self.directory.glob("*.yaml"))

    def _stamp(self, name: str, model: LoadedModel | None) -> tuple[float, ...]:
        paths = [self.manifest_path(name)] + ([model.path] if model else [])
        return tuple(p.stat().st_mtime_ns if p.exists() else -1.0 for p in paths)

    def load(self, name: str) -> LoadedModel:
        """Load (or reload) ``name`` and put it in service.

        On :class:`ModelError` the model already in service, if any, stays in service.
        """
        model = load_model(self.manifest_path(name), self.num_threads, self.backend, self.probe)
        if model.name != name:
            raise ModelError(
                f"{self.manifest_path(name)}: manifest names the model {model.name!r}, not {name!r}"
            )
        with self._lock:
            self._models[name] = model
            self._stamps[name] = self._stamp(name, model)
        return model

    def get(self, name: str) -> LoadedModel:
        """The model in service under ``name``; loads it on first use."""
        model = self._models.get(name)
        return model if model is not None else self.load(name)

    def handle(self, name: str) -> ModelHandle:
        """A handle that always invokes the current version of ``name`` (loads it now)."""
        self.get(name)
        return ModelHandle(self, name)

    def loaded(self) -> dict[str, LoadedModel]:
        """A snapshot of the models in service."""
        with self._lock:
            return dict(self._models)

    def refresh(self) -> list[ReloadResult]:
        """Reload every loaded model whose manifest or file changed on disk since it was loaded."""
        results = []
        for name, model in self.loaded().items():
            if self._stamp(name, model) == self._stamps.get(name):
                continue
            try:
                new = self.load(name)
            except ModelError as exc:
                with self._lock:
                    self._stamps[name] = self._stamp(name, model)
                results.append(ReloadResult(name, None, str(exc)))
                continue
            results.append(ReloadResult(name, new.version, None))
        return results
