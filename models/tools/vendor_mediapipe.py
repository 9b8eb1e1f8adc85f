"""Copy the MediaPipe pose and face detectors out of an unpacked mediapipe 0.10.21 wheel.

Development tool, run once; the files it writes are committed under ``models/files/``::

    pip download mediapipe==0.10.21 --no-deps -d /tmp/mp && cd /tmp/mp && unzip -q mediapipe-*.whl
    python -m models.tools.vendor_mediapipe /tmp/mp

The anchor and decoding settings in each manifest's ``params`` are those of MediaPipe's own graphs
(``pose_detection_cpu.pbtxt``, ``face_detection_short_range.pbtxt``,
``face_detection_full_range.pbtxt`` in github.com/google-ai-edge/mediapipe, Apache-2.0), written
from the published graph configs; no code is copied.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from models.manifest import Manifest, describe_tensors, sha256_hex, write_manifest
from models.runtime import make_interpreter, select_backend

WHEEL = "mediapipe 0.10.21 (PyPI wheel mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl)"
SAME_ON_ARM = "the feasibility study found it byte-identical in the aarch64 0.10.18 wheel"
TRAINING = (
    "Trained by Google (MediaPipe BlazePose / BlazeFace detectors; see the MediaPipe model cards). "
    "Not retrained by this project."
)


def _blaze(size: int, strides: list[int], interp: float, keypoints: int, min_score: float) -> dict[str, Any]:
    return {
        "decoder": "blaze",
        "input_range": [-1.0, 1.0],
        "anchors": {
            "input_size": size,
            "strides": strides,
            "aspect_ratios": [1.0],
            "interpolated_scale_aspect_ratio": interp,
            "anchor_offset": 0.5,
            "fixed_anchor_size": True,
        },
        "num_keypoints": keypoints,
        "coord_scale": float(size),
        "score_clip": 100.0,
        "min_score": min_score,
        "nms_iou": 0.3,
        "nms_weighted": True,
    }


MODELS: dict[str, tuple[str, str, dict[str, Any], list[str]]] = {
    "pose_detection": (
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        "BlazePose person detector (224x224): whole-person box and 4 keypoints (hip centre, "
        "full-body circle, shoulder centre, upper-body circle). Near-field presence, not crowd counting.",
        _blaze(224, [8, 16, 32, 32, 32], 1.0, 4, 0.5),
        ["person"],
    ),
    "face_detection_short_range": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "BlazeFace short-range face detector (128x128): faces within about 2 m, 6 keypoints.",
        _blaze(128, [8, 16, 16, 16], 1.0, 6, 0.5),
        ["face"],
    ),
    "face_detection_full_range": (
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "BlazeFace full-range face detector (192x192, sparse): faces within about 5 m, 6 keypoints.",
        _blaze(192, [4], 0.0, 6, 0.6),
        ["face"],
    ),
}


def vendor(wheel_dir: Path, out_dir: Path) -> list[Path]:
    """Copy the models and the wheel's LICENSE into ``out_dir`` and write their manifests."""
    out_dir.mkdir(parents=True, exist_ok=True)
    licence = next(wheel_dir.glob("mediapipe-*.dist-info/LICENSE"))
    shutil.copyfile(licence, out_dir / "LICENSE.mediapipe")
    backend = select_backend()
    written = []
    for name, (member, task, params, labels) in MODELS.items():
        content = (wheel_dir / member).read_bytes()
        target = out_dir / f"{name}.tflite"
        target.write_bytes(content)
        interp = make_interpreter(content, 1, backend)
        manifest = Manifest(
            name=name,
            version="0.10.21",
            file=target.name,
            sha256=sha256_hex(content),
            task=task,
            inputs=describe_tensors(interp.get_input_details()),
            outputs=describe_tensors(interp.get_output_details()),
            labels=labels,
            licence="Apache-2.0",
            licence_file="LICENSE.mediapipe",
            provenance=f"{WHEEL}, member {member} ({SAME_ON_ARM})",
            training=TRAINING,
            params=params,
        )
        write_manifest(manifest, out_dir / f"{name}.yaml")
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    """``vendor_mediapipe WHEEL_DIR [OUT_DIR]``."""
    if not argv:
        print(__doc__)
        return 2
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "files"
    for path in vendor(Path(argv[0]), out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
