"""Camera pipeline on a 1280x720 stream: fps with and without motion gating, and the pipeline's
overhead over the bare interpreter's invoke time, measured in the same run.

    PYTHONPATH=. python bench/bench_camera.py [--frames 250] [--model pose_detection] [--threads N]

The stream is a synthetic two-lane road (models/camera/synthetic.py) written to an MJPEG .avi
and read back through the same FrameReader the agent uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.errors import DeviceTimeout
from models.camera.detectors import BlazeDetector, MotionBlobDetector
from models.camera.frames import FrameReader
from models.camera.motion import MotionGate
from models.camera.pipeline import CameraPipeline
from models.camera.synthetic import RoadScene
from models.camera.tracker import Tracker
from models.config import PACKAGED_MODELS
from models.registry import ModelRegistry
from models.runtime import default_threads, make_interpreter, select_backend


def frames_of(path: Path):
    reader = FrameReader(str(path), pace=False)
    try:
        while True:
            try:
                yield reader.read()[0]
            except DeviceTimeout:
                return
    finally:
        reader.close()


def decode_only(path: Path) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in frames_of(path))
    return n / (time.perf_counter() - start)


def run_pipeline(path: Path, pipeline: CameraPipeline, scene: RoadScene) -> dict:
    """fps including decode, and processing time per frame excluding decode."""
    proc = []
    crossings: dict[str, int] = {}
    start = time.perf_counter()
    for i, frame in enumerate(frames_of(path)):
        t0 = time.perf_counter()
        result = pipeline.process(frame, i / 25.0)
        proc.append(time.perf_counter() - t0)
        for c in result.state.crossings:
            crossings[c.direction] = crossings.get(c.direction, 0) + 1
    wall = time.perf_counter() - start
    return {
        "fps": len(proc) / wall,
        "process_ms_mean": 1000 * statistics.fmean(proc),
        "detector_runs": pipeline.detector_runs,
        "frames": len(proc),
        "crossings": crossings,
        "truth": scene.true_crossings(),
    }


def overhead(path: Path, registry: ModelRegistry, model: str, threads: int) -> dict:
    """Ungated model pipeline vs bare ``Interpreter.invoke`` on a prepared tensor, interleaved
    frame by frame so both see the same machine load."""
    detector = BlazeDetector(registry.handle(model))
    pipeline = CameraPipeline(detector, Tracker(), gate=None)
    loaded = registry.get(model)
    interp = make_interpreter(loaded.path.read_bytes(), threads, select_backend())
    idx = interp.get_input_details()[0]["index"]
    interp.set_tensor(idx, np.zeros(loaded.manifest.inputs[0].shape, np.float32))
    interp.invoke()
    pipe_s, bare_s, invoke_in_pipe_s = [], [], []
    for i, frame in enumerate(frames_of(path)):
        t0 = time.perf_counter()
        pipeline.process(frame, i / 25.0)
        pipe_s.append(time.perf_counter() - t0)
        invoke_in_pipe_s.append(loaded.last_invoke_s)
        t0 = time.perf_counter()
        interp.invoke()
        bare_s.append(time.perf_counter() - t0)
    pipe, bare = statistics.median(pipe_s), statistics.median(bare_s)
    return {
        "model": model,
        "pipeline_ms_median": 1000 * pipe,
        "bare_invoke_ms_median": 1000 * bare,
        "invoke_inside_pipeline_ms_median": 1000 * statistics.median(invoke_in_pipe_s),
        "overhead_pct": 100 * (pipe - bare) / bare,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--model", default="pose_detection")
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args()

    scene = RoadScene(1280, 720, frames=args.frames, seed=7)
    quiet = RoadScene(1280, 720, frames=args.frames, seed=7, rate=0.002)  # long gaps between vehicles
    registry = ModelRegistry(PACKAGED_MODELS, num_threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = scene.write(Path(tmp) / "road720.avi")
        results: dict = {"frames": args.frames, "size": "1280x720", "threads": args.threads}
        results["backend"] = registry.backend.name
        results["decode_only_fps"] = decode_only(path)
        tracker = Tracker([scene.line], [scene.zone])
        results["motion_blob"] = run_pipeline(path, CameraPipeline(MotionBlobDetector(), tracker), scene)
        ungated = CameraPipeline(BlazeDetector(registry.handle(args.model)), Tracker(), gate=None)
        results["model_ungated"] = run_pipeline(path, ungated, scene)
        gated = CameraPipeline(BlazeDetector(registry.handle(args.model)), Tracker(), gate=MotionGate())
        results["model_gated"] = run_pipeline(path, gated, scene)
        quiet_path = quiet.write(Path(tmp) / "quiet720.avi")
        gated_quiet = CameraPipeline(BlazeDetector(registry.handle(args.model)), Tracker(), gate=MotionGate())
        results["model_gated_quiet"] = run_pipeline(quiet_path, gated_quiet, quiet)
        results["overhead"] = overhead(path, registry, args.model, args.threads)

    mb, ug, g, ov = (
        results["motion_blob"],
        results["model_ungated"],
        results["model_gated"],
        results["overhead"],
    )
    gq = results["model_gated_quiet"]
    print(f"1280x720, {args.frames} frames, runtime {results['backend']}, {args.threads} threads")
    print(f"  decode only (baseline)          {results['decode_only_fps']:7.1f} fps")
    print(
        f"  motion-blob detector            {mb['fps']:7.1f} fps  ({mb['fps'] / results['decode_only_fps']:.2f} x decode)"
        f"  counts {mb['crossings']} truth {mb['truth']}"
    )
    print(f"  {args.model} ungated        {ug['fps']:7.1f} fps  detector runs {ug['detector_runs']}")
    print(
        f"  {args.model} motion-gated   {g['fps']:7.1f} fps  detector runs {g['detector_runs']}"
        f"  ({g['fps'] / ug['fps']:.2f} x ungated)"
    )
    print(
        f"  {args.model} gated, quiet road {gq['fps']:7.1f} fps  detector runs {gq['detector_runs']}"
        f"  ({gq['fps'] / ug['fps']:.2f} x ungated)"
    )
    print(f"  pipeline per frame (ungated)    {ov['pipeline_ms_median']:7.2f} ms median")
    print(f"  bare Interpreter.invoke         {ov['bare_invoke_ms_median']:7.2f} ms median (baseline)")
    print(f"  overhead over bare invoke       {ov['overhead_pct']:7.1f} %  (target <= 10 %)")
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
