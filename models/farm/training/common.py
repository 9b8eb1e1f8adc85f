"""Shared training helpers: deterministic TensorFlow, int8 conversion, metrics, manifests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def deterministic_tf(seed: int) -> Any:
    """Import TensorFlow with fixed seeds, one thread and deterministic ops."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_DETERMINISTIC_OPS"] = "1"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return tf


def to_int8_tflite(tf: Any, model: Any, representative: npt.NDArray[np.float32]) -> bytes:
    """Full-integer quantisation (int8 weights, activations, input and output)."""

    def rep() -> Any:
        for i in range(len(representative)):
            yield [representative[i: i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def run_tflite(data: bytes, x: npt.NDArray[Any], batch: int = 1) -> npt.NDArray[np.float32]:
    """Evaluate an int8 model in the LiteRT interpreter, one sample at a time (as on the device)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    s_in, z_in = inp["quantization"]
    s_out, z_out = out["quantization"]
    results = []
    for i in range(len(x)):
        q = np.clip(np.round(x[i: i + 1] / s_in + z_in), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        results.append((interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out)
    return np.concatenate(results)


def binary_metrics(y: npt.NDArray[np.generic], pred: npt.NDArray[np.bool_]) -> dict[str, float]:
    """Precision, recall and F1 of a binary prediction."""
    truth = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    tp = float((pred & truth).sum())
    p = tp / max(float(pred.sum()), 1.0)
    r = tp / max(float(truth.sum()), 1.0)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-9)}


def best_threshold(y: npt.NDArray[np.generic], score: npt.NDArray[np.floating[Any]]) -> float:
    """The decision threshold that maximises F1 (tuned on validation years only)."""
    grid = np.unique(np.quantile(score, np.linspace(0.5, 0.995, 200)))
    f1 = [binary_metrics(y, score >= t)["f1"] for t in grid]
    return float(grid[int(np.argmax(f1))])


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Pretty JSON with a trailing newline."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
