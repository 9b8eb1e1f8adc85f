"""Write a model's manifest next to it in ``models/files`` (development only)."""

from __future__ import annotations

from typing import Any

from models.farm.features import FAULT_CLASSES, SENSOR_KINDS
from models.farm.training import config
from models.farm.training.common import sha256_bytes, write_json

_TRAINING = {
    "irrigation": (
        "MLP 47-32-16-1 trained with models/farm/training/train_irrigation.py on AquaCrop 3.1 seasons "
        "(maize, tomato, soybean; 5 soils) driven by a Hanoi-like synthetic weather generator; labels: "
        "an expert soil-moisture-threshold schedule irrigates on day t+1 or t+2. Split by weather year."
    ),
    "fault": (
        "1D-CNN trained with models/farm/training/train_faults.py on hourly soil-moisture, temperature, "
        "humidity and rain streams built from the same simulated seasons, half of the 72 h windows with "
        "one injected fault (stuck, spike, drift, dropout). Split by weather year."
    ),
}


def tensor_specs(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output tensors of a .tflite as the interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)

    def spec(d: dict[str, Any]) -> dict[str, Any]:
        scale, zero = d["quantization"]
        return {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": d["dtype"].__name__,
                "quantization": {"scale": float(scale), "zero_point": int(zero)}}

    return [spec(d) for d in interp.get_input_details()], [spec(d) for d in interp.get_output_details()]


def write_manifest(name: str, version: str, data: bytes, kind: str, extra: dict[str, Any]) -> None:
    """The manifest: identity, hash, tensors, labels, licence, provenance, decision settings."""
    inputs, outputs = tensor_specs(data)
    labels = ["irrigation_needed_48h"] if kind == "irrigation" else list(FAULT_CLASSES)
    manifest = {
        "name": name,
        "version": version,
        "file": f"{name}.tflite",
        "sha256": sha256_bytes(data),
        "size_bytes": len(data),
        "inputs": inputs,
        "outputs": outputs,
        "labels": labels,
        "licence": "Apache-2.0",
        "source": "kinhbac-edge, trained on simulation (see the model card)",
        "training": _TRAINING[kind],
        "seed": config.SEED,
        "settings": extra | ({"sensor_kinds": list(SENSOR_KINDS)} if kind == "fault" else {}),
    }
    write_json(config.FILES_DIR / f"{name}.json", manifest)
