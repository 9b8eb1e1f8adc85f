"""Camera pipeline on a 1280x720 stream: fps with and without motion gating, and the pipeline's
overhead over the bare interpreter's invoke time, measured in the same run.

    PYTHONPATH=. python bench/bench_camera.py [--frames 200] [--model pose_detection] [--threads N]

The streams are synthetic two-lane roads (models/camera/synthetic.py) written to MJPEG .avi files
and read back through the same FrameReader the agent uses: a busy road (vehicles on screen in
almost every frame) and a quiet one (one vehicle in the last 40 % of the stream). Every variant
processes the same decoded frame in turn, frame by frame, so all see the same machine load; the
baselines (decode only, bare ``Interpreter.invoke``) are measured in that same loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from kernel.errors import DeviceTimeout
from models.camera.detectors import BlazeDetector, MotionBlobDetector
from models.camera.frames import FrameReader
from models.camera.motion import MotionGate
from models.camera.pipeline import CameraPipeline
from models.camera.synthetic import RoadScene, Vehicle
from models.camera.tracker import Tracker
from models.config import PACKAGED_MODELS
from models.registry import ModelRegistry
from models.runtime import default_threads, make_interpreter, select_backend


def timed_frames(path: Path) -> Iterator[tuple[np.ndarray, float]]:
    """Frames of a file with the time each took to read and decode."""
    reader = FrameReader(str(path), pace=False)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                frame = reader.read()[0]
            except DeviceTimeout:
                return
            yield frame, time.perf_counter() - t0
    finally:
        reader.close()


def bare_invoker(registry: ModelRegistry, model: str, threads: int) -> Callable[[], None]:
    """A separate interpreter of the same file and threads, its input set once: only ``invoke``."""
    loaded = registry.get(model)
    interp = make_interpreter(loaded.path.read_bytes(), threads, select_backend())
    interp.set_tensor(
        interp.get_input_details()[0]["index"], np.zeros(loaded.manifest.inputs[0].shape, np.float32)
    )
    interp.invoke()
    return interp.invoke


def measure(path: Path, variants: dict[str, CameraPipeline], bare: Callable[[], None]) -> dict:
    """Per variant: processing seconds per frame (decode excluded), crossings, detector runs."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    times["decode"] = []
    times["bare_invoke"] = []
    times["invoke_in_pipeline"] = []
    counts: dict[str, dict[str, int]] = {name: {} for name in variants}
    for i, (frame, decode_s) in enumerate(timed_frames(path)):
        times["decode"].append(decode_s)
        for name, pipeline in variants.items():
            t0 = time.perf_counter()
            result = pipeline.process(frame, i / 25.0)
            times[name].append(time.perf_counter() - t0)
            for c in result.state.crossings:
                counts[name][c.direction] = counts[name].get(c.direction, 0) + 1
            if name == "model_ungated":
                times["invoke_in_pipeline"].append(pipeline.detector.model.current.last_invoke_s)  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        bare()
        times["bare_invoke"].append(time.perf_counter() - t0)
    decode = sum(times["decode"])
    out: dict = {"frames": len(times["decode"]), "decode_fps": len(times["decode"]) / decode}
    out["bare_invoke_ms_median"] = 1000 * statistics.median(times["bare_invoke"])
    if "model_ungated" in variants:
        # Paired per frame: each pipeline call against the bare invoke that ran right after it.
        pipe, bare_s, inner = times["model_ungated"], times["bare_invoke"], times["invoke_in_pipeline"]
        out["overhead_pct"] = 100 * statistics.median((p - b) / b for p, b in zip(pipe, bare_s, strict=True))
        out["own_work_pct"] = 100 * statistics.median(
            (p - i) / b for p, i, b in zip(pipe, inner, bare_s, strict=True)
        )
        out["own_work_ms_median"] = 1000 * statistics.median(p - i for p, i in zip(pipe, inner, strict=True))
    for name, pipeline in variants.items():
        total = sum(times[name])
        out[name] = {
            "fps_with_decode": len(times[name]) / (total + decode),
            "fps_processing": len(times[name]) / total,
            "ms_median": 1000 * statistics.median(times[name]),
            "detector_runs": pipeline.detector_runs,
            "crossings": counts[name],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--model", default="pose_detection")
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args()

    registry = ModelRegistry(PACKAGED_MODELS, num_threads=args.threads)
    busy = RoadScene(1280, 720, frames=args.frames, seed=7)
    quiet = RoadScene(1280, 720, frames=args.frames, seed=7)
    quiet.vehicles = [Vehicle(0, int(args.frames * 0.6), 12.0, 120.0, 72.0, (230, 230, 230))]

    def model_pipeline(gated: bool) -> CameraPipeline:
        gate = MotionGate() if gated else None
        return CameraPipeline(BlazeDetector(registry.handle(args.model)), Tracker(), gate=gate)

    results: dict = {"size": "1280x720", "threads": args.threads, "backend": registry.backend.name}
    bare = bare_invoker(registry, args.model, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        busy_variants = {
            "motion_blob": CameraPipeline(MotionBlobDetector(), Tracker([busy.line], [busy.zone])),
            "model_ungated": model_pipeline(False),
            "model_gated": model_pipeline(True),
        }
        results["busy"] = measure(busy.write(Path(tmp) / "busy.avi"), busy_variants, bare)
        results["busy"]["truth"] = busy.true_crossings()
        quiet_variants = {"model_ungated": model_pipeline(False), "model_gated": model_pipeline(True)}
        results["quiet"] = measure(quiet.write(Path(tmp) / "quiet.avi"), quiet_variants, bare)

    b, q = results["busy"], results["quiet"]
    print(f"1280x720, {b['frames']} frames per stream, runtime {results['backend']}, {args.threads} threads")
    print(f"  decode only (baseline)                 {b['decode_fps']:7.1f} fps")
    mb = b["motion_blob"]
    print(
        f"  motion-blob detector, busy road        {mb['fps_with_decode']:7.1f} fps"
        f"  ({mb['fps_with_decode'] / b['decode_fps']:.2f} x decode)  counts {mb['crossings']} truth {b['truth']}"
    )
    for label, res in (("busy", b), ("quiet", q)):
        ug, g = res["model_ungated"], res["model_gated"]
        print(
            f"  {args.model}, {label:5} road, ungated   {ug['fps_with_decode']:7.1f} fps"
            f"  detector runs {ug['detector_runs']}/{res['frames']}"
        )
        print(
            f"  {args.model}, {label:5} road, gated     {g['fps_with_decode']:7.1f} fps"
            f"  detector runs {g['detector_runs']}/{res['frames']}"
            f"  ({g['fps_with_decode'] / ug['fps_with_decode']:.2f} x ungated)"
        )
    for label, res in (("busy", b), ("quiet", q)):
        print(
            f"  {label:5} road: ungated pipeline {res['model_ungated']['ms_median']:6.2f} ms, bare invoke"
            f" {res['bare_invoke_ms_median']:6.2f} ms (baseline), overhead {res['overhead_pct']:5.1f} %"
            f" (target <= 10 %); pipeline's own work {res['own_work_ms_median']:5.2f} ms ="
            f" {res['own_work_pct']:4.1f} % of invoke"
        )
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
