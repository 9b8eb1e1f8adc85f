"""Build ``tiny_ssd``: a small SSD-format detector ending in ``TFLite_Detection_PostProcess``.

Development tool; needs TensorFlow, which is never a device dependency. Run it from the
repository root with the separate TensorFlow venv::

    /work/venv-tf/bin/pip install tensorflow-cpu ai-edge-litert pydantic pyyaml
    /work/venv-tf/bin/python -m models.tools.make_ssd_model

It writes ``models/files/tiny_ssd.tflite`` and ``tiny_ssd.yaml``. The network is not trained: its
weights are set by hand so that its output is known exactly, which is what a decoder test needs.

* Input ``image``: float32 ``[1, 64, 64, 3]``, RGB scaled to 0..1.
* An 8x8 average pool gives one cell per 8x8 block; one anchor per cell, centred on it, 1/8 of
  the image wide and high (``ycenter, xcenter, h, w`` rows, as the op expects).
* Class scores (sigmoid): ``red`` when the cell's mean R - G > 0.5, ``green`` when G - R > 0.5;
  index 0 is the background class the op skips.
* Box encodings are constant: ``ty = 1, tx = -1, th = 5 ln 2, tw = 0`` with scales
  ``y 10, x 10, h 5, w 5``, so every decoded box is its anchor moved down by 1/80 and left by 1/80
  of the image, twice as high, as wide.

The post-processing op is attached the way TensorFlow's Object Detection API exports SSD models
for TFLite (a ``tf.function`` whose ``experimental_implements`` signature names
``TFLite_Detection_PostProcess`` and its attributes, which the converter turns into the custom op;
see ``research/object_detection/export_tflite_graph_lib_tf2.py`` in github.com/tensorflow/models,
Apache-2.0). Written from that description, no code copied.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

GRID = 8
SIZE = 64
NUM_ANCHORS = GRID * GRID
LABELS = ["background", "red", "green"]
SCALES = {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}
BOX_BIAS = [1.0, -1.0, 5.0 * math.log(2.0), 0.0]
GAIN = 20.0
MAX_DETECTIONS = 10
VERSION = "1.0.0"


def anchors() -> np.ndarray:
    """(64, 4) anchors as ``ycenter, xcenter, h, w`` in normalised coordinates, row-major cells."""
    rows = []
    for r in range(GRID):
        for c in range(GRID):
            rows.append([(r + 0.5) / GRID, (c + 0.5) / GRID, 1.0 / GRID, 1.0 / GRID])
    return np.array(rows, np.float32)


def expected_box(row: int, col: int) -> tuple[float, float, float, float]:
    """The ``ymin, xmin, ymax, xmax`` the model must output for an object in cell (row, col)."""
    ya, xa, ha, wa = anchors()[row * GRID + col]
    yc = BOX_BIAS[0] / SCALES["y_scale"] * ha + ya
    xc = BOX_BIAS[1] / SCALES["x_scale"] * wa + xa
    h = math.exp(BOX_BIAS[2] / SCALES["h_scale"]) * ha
    w = math.exp(BOX_BIAS[3] / SCALES["w_scale"]) * wa
    return (float(yc - h / 2), float(xc - w / 2), float(yc + h / 2), float(xc + w / 2))


def _implements() -> str:
    attrs = {
        "max_detections": ("i", MAX_DETECTIONS),
        "max_classes_per_detection": ("i", 1),
        "detections_per_class": ("i", 100),
        "use_regular_nms": ("b", "false"),
        "nms_score_threshold": ("f", 0.3),
        "nms_iou_threshold": ("f", 0.5),
        "num_classes": ("i", len(LABELS) - 1),
        **{k: ("f", v) for k, v in SCALES.items()},
    }
    parts = ['name: "TFLite_Detection_PostProcess"']
    for key, (kind, value) in attrs.items():
        parts.append(f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}')
    return " ".join(parts)


def build(quantized: bool = False) -> bytes:
    """Convert the hand-weighted network to .tflite bytes (needs TensorFlow).

    ``quantized`` makes ``tiny_ssd_uint8``: int8 weights and activations with a uint8 image input
    (0..255 RGB, scale 1/255), calibrated on images of red and green squares.
    """
    import tensorflow as tf

    anchor_tensor = tf.constant(anchors())
    w_cls = np.zeros((1, 1, 3, 3), np.float32)
    w_cls[0, 0, :, 1] = [GAIN, -GAIN, 0.0]  # red: R - G
    w_cls[0, 0, :, 2] = [-GAIN, GAIN, 0.0]  # green: G - R
    b_cls = np.array([-GAIN, -0.5 * GAIN, -0.5 * GAIN], np.float32)
    b_box = np.array(BOX_BIAS, np.float32)

    @tf.function(experimental_implements=_implements())
    def postprocess(box_encodings: Any, class_predictions: Any, anchor_rows: Any) -> Any:
        # Placeholder body: the converter replaces this function by the custom op.
        zero = tf.constant(0.0, tf.float32)
        return zero, zero, zero, zero

    class TinySsd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")])
        def __call__(self, image: Any) -> Any:
            pooled = tf.nn.avg_pool2d(image, SIZE // GRID, SIZE // GRID, "VALID")
            logits = tf.nn.conv2d(pooled, tf.constant(w_cls), 1, "VALID") + b_cls
            scores = tf.reshape(tf.sigmoid(logits), [1, NUM_ANCHORS, len(LABELS)])
            # Box encodings do not depend on the pixels: a zero-weight 1x1 conv plus the bias.
            enc = tf.nn.conv2d(pooled, tf.zeros((1, 1, 3, 4)), 1, "VALID") + b_box
            boxes = tf.reshape(enc, [1, NUM_ANCHORS, 4])
            return postprocess(boxes, scores, anchor_tensor)

    module = TinySsd()
    concrete = module.__call__.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True
    if quantized:
        rng = np.random.default_rng(0)

        def calibration() -> Any:
            for _ in range(64):
                img = np.zeros((1, SIZE, SIZE, 3), np.float32)
                for _ in range(3):
                    r, c, ch = rng.integers(0, GRID), rng.integers(0, GRID), rng.integers(0, 2)
                    img[0, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8, ch] = 1.0
                yield [img]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.inference_input_type = tf.uint8
    return bytes(converter.convert())


def _output_order(names: list[str]) -> dict[str, int]:
    """Which manifest output is which: the op's outputs are ``<call>:0..3`` = boxes, classes,
    scores, count, but the interpreter may list them in another order."""
    order = {}
    for i, key in enumerate(("boxes", "classes", "scores", "count")):
        order[key] = next(j for j, name in enumerate(names) if name.endswith(f":{i}"))
    return order


def write(content: bytes, out_dir: Path, name: str = "tiny_ssd") -> Path:
    """Write the model and its manifest (tensor specs read back from the real interpreter)."""
    from models.manifest import Manifest, describe_tensors, sha256_hex, write_manifest
    from models.runtime import make_interpreter, select_backend

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.tflite"
    path.write_bytes(content)
    interp = make_interpreter(content, 1, select_backend())
    outputs = describe_tensors(interp.get_output_details())
    manifest = Manifest(
        name=name,
        version=VERSION,
        file=path.name,
        sha256=sha256_hex(content),
        task="SSD-format test detector (red and green squares) with TFLite_Detection_PostProcess outputs",
        inputs=describe_tensors(interp.get_input_details()),
        outputs=outputs,
        labels=LABELS,
        licence="Apache-2.0",
        provenance="Built by models/tools/make_ssd_model.py in this repository (TensorFlow converter).",
        training="Not trained: weights set by hand so the expected detections are known exactly.",
        params={
            "decoder": "ssd",
            "input_range": [0.0, 1.0],
            "label_offset": 1,
            "min_score": 0.5,
            "outputs": _output_order([o.name for o in outputs]),
            "anchors_grid": GRID,
            "box_bias": BOX_BIAS,
            **SCALES,
        },
    )
    write_manifest(manifest, out_dir / f"{name}.yaml")
    return path


def main(argv: list[str]) -> int:
    """``make_ssd_model [OUT_DIR]``; default ``models/files``. Writes tiny_ssd and tiny_ssd_uint8."""
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "files"
    print(write(build(), out))
    print(write(build(quantized=True), out, "tiny_ssd_uint8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
