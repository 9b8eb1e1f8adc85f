"""The model manifest: a YAML file beside each ``.tflite`` saying what the model is and must look like.

The loader refuses a model whose bytes do not hash to ``sha256`` or whose tensors differ from
``inputs`` / ``outputs`` (order, name, shape, dtype, quantisation). See docs/inference.md.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from kernel.config_base import StrictModel, validation_problems
from kernel.errors import ModelError

DType = Literal["float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"]
MODEL_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class Quantization(StrictModel):
    """Affine quantisation of one tensor: ``real = scale * (q - zero_point)``."""

    scale: float = Field(gt=0)
    zero_point: int


class TensorSpec(StrictModel):
    """One input or output tensor. ``-1`` in ``shape`` is a dimension fixed only at run time."""

    name: str = Field(min_length=1, description="The tensor's name inside the .tflite file.")
    shape: list[int] = Field(min_length=0)
    dtype: DType
    quantization: Quantization | None = None

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in value):
            raise ValueError(f"{value} has a dimension that is neither positive nor -1")
        return value


class Manifest(StrictModel):
    """Everything the agent must know about a model before running it."""

    name: str = Field(pattern=MODEL_NAME)
    version: str = Field(min_length=1)
    file: str = Field(default="", description="The .tflite file beside the manifest; default <name>.tflite.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    task: str = Field(default="", description="What the model does, e.g. pose_detection, ssd_detection.")
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    labels: list[str] = Field(default_factory=list)
    licence: str = Field(min_length=1)
    licence_file: str | None = None
    provenance: str = Field(min_length=1, description="Where the file came from.")
    training: str = Field(min_length=1, description="How it was trained, or by whom.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Decoder settings (anchors, thresholds)."
    )

    @property
    def filename(self) -> str:
        """The .tflite file name, relative to the manifest's directory."""
        return self.file or f"{self.name}.tflite"

    def meta(self) -> dict[str, str]:
        """What a Reading produced by this model carries in ``meta``."""
        return {"model": self.name, "model_version": self.version}


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file; any problem is a :class:`ModelError` naming the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{path}: cannot read manifest: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: manifest is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: manifest must be a mapping")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ModelError(f"{path}: " + "; ".join(validation_problems(exc))) from exc


def write_manifest(manifest: Manifest, path: Path) -> None:
    """Write a manifest as YAML (used by the tools that make or vendor models)."""
    data = manifest.model_dump(exclude_defaults=False)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=110), encoding="utf-8")


def _dtype_name(dtype: Any) -> str:
    import numpy as np

    return str(np.dtype(dtype))


def _same_quant(spec: Quantization | None, actual: tuple[float, int]) -> bool:
    scale, zero = float(actual[0]), int(actual[1])
    if spec is None:
        return scale == 0.0
    return math.isclose(spec.scale, scale, rel_tol=1e-5) and spec.zero_point == zero


def check_tensors(kind: str, specs: list[TensorSpec], details: list[dict[str, Any]]) -> list[str]:
    """Differences between manifest tensors and the interpreter's tensor details, one line each."""
    problems = []
    if len(specs) != len(details):
        return [f"{kind}: manifest lists {len(specs)} tensors, the model has {len(details)}"]
    for i, (spec, det) in enumerate(zip(specs, details, strict=True)):
        where = f"{kind}[{i}]"
        shape = [int(d) for d in det.get("shape_signature", det["shape"])]
        if det["name"] != spec.name:
            problems.append(f"{where}.name: manifest says {spec.name!r}, model has {det['name']!r}")
        if shape != spec.shape:
            problems.append(f"{where}.shape: manifest says {spec.shape}, model has {shape}")
        dtype = _dtype_name(det["dtype"])
        if dtype != spec.dtype:
            problems.append(f"{where}.dtype: manifest says {spec.dtype}, model has {dtype}")
        if not _same_quant(spec.quantization, det["quantization"]):
            problems.append(
                f"{where}.quantization: manifest says {spec.quantization}, model has "
                f"scale={det['quantization'][0]} zero_point={det['quantization'][1]}"
            )
    return problems


def describe_tensors(details: list[dict[str, Any]]) -> list[TensorSpec]:
    """Manifest entries for an interpreter's tensors (for the tools that write manifests)."""
    specs = []
    for det in details:
        scale, zero = det["quantization"]
        quant = Quantization(scale=float(scale), zero_point=int(zero)) if scale else None
        shape = [int(d) for d in det.get("shape_signature", det["shape"])]
        dtype = _dtype_name(det["dtype"])
        spec = {"name": det["name"], "shape": shape, "dtype": dtype, "quantization": quant}
        specs.append(TensorSpec.model_validate(spec))
    return specs
