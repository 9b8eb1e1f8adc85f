"""Write a farm model's manifest (the runtime's YAML format) beside it in ``models/files``."""

from __future__ import annotations

from typing import Any

from models.farm.features import FAULT_CLASSES
from models.farm.training import config
from models.farm.training.common import sha256_bytes
from models.manifest import Manifest, describe_tensors
from models.manifest import write_manifest as write_yaml

_TRAINING = {
    "irrigation": (
        "MLP 47-32-16-1 trained by models/farm/training/train_irrigation.py (seed "
        f"{config.SEED}) on AquaCrop 3.1 seasons (maize, tomato, soybean; 5 soils) driven by a "
        "Hanoi-like synthetic weather generator; label: an expert soil-moisture-threshold schedule "
        "irrigates on day t+1 or t+2. Split by weather year. Trained on simulation: calibrate per site."
    ),
    "fault": (
        "1D-CNN trained by models/farm/training/train_faults.py (seed "
        f"{config.SEED}) on hourly soil-moisture, temperature, humidity and rain streams built from the "
        "same simulated seasons, half of the 72 h windows with one injected fault (stuck, spike, drift, "
        "dropout). Split by weather year. Trained on simulation: calibrate per site."
    ),
}
_TASK = {"irrigation": "irrigation_need", "fault": "sensor_fault"}


def write_manifest(name: str, version: str, data: bytes, kind: str, extra: dict[str, Any]) -> None:
    """The manifest: identity, hash, tensors, labels, licence, provenance, decision settings."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    manifest = Manifest(
        name=name,
        version=version,
        file=f"{name}.tflite",
        sha256=sha256_bytes(data),
        task=_TASK[kind],
        inputs=describe_tensors(interp.get_input_details()),
        outputs=describe_tensors(interp.get_output_details()),
        labels=["irrigation_needed_48h"] if kind == "irrigation" else list(FAULT_CLASSES),
        licence="Apache-2.0",
        provenance="kinhbac-edge; trained on simulated data (see the model card " f"models/files/{name}.md)",
        training=_TRAINING[kind],
        params=extra,
    )
    write_yaml(manifest, config.FILES_DIR / f"{name}.yaml")
