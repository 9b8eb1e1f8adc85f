"""Score one camera checkout on one approach clip: queue and occupancy error through the reds,
stop-line crossings, milliseconds per frame. Prints one JSON line.

    PYTHONPATH=<checkout> python bench/queue_eval.py CLIP.avi CLIP.json

Only the camera API that every version of the project has is used (``Config``, ``CameraSource``,
its pipeline's ``process``), so the same script scores an older checkout (bench/bench_queue.py runs
it against main's in the same run). Where the checkout has it, the signal the agent commands is fed
the way the agent feeds it: an ``ApproachSignal`` event handed to the camera's detector-bus listener.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from kernel.errors import DeviceTimeout
from models.camera.frames import FrameReader
from models.camera.kind import CameraSource, Config
from models.service import registry_for


def camera_config(url: str, truth: dict) -> Config:
    """The camera as a site would configure it for this clip: defaults except the geometry."""
    return Config.model_validate(
        {
            "driver": "camera",
            "name": "cam-approach",
            "url": url,
            "pace": False,
            "lines": [{"name": "stop_line", "points": truth["line"], "directions": truth["line_directions"]}],
            "zones": [{"name": "approach", "polygon": truth["zone"], "queue_speed": truth["queue_speed"]}],
        }
    )


def signal_feeder(source: CameraSource) -> object | None:
    """A function ``feed(red: bool)`` that tells the camera its approach's signal, if it can listen."""
    try:
        from kernel.detectors import ApproachSignal  # type: ignore[attr-defined]
    except ImportError:
        return None
    listener = getattr(source, "on_detector_event", None)
    if listener is None:
        return None

    def feed(red: bool) -> None:
        listener(ApproachSignal("cam-approach", "approach", stop=red))

    return feed


def evaluate(video: str, truth_path: str) -> dict:
    """Run the clip through a default CameraSource's pipeline and compare with the truth."""
    with open(truth_path) as f:
        truth = json.load(f)
    source = CameraSource(camera_config(video, truth), registry_for(None))
    feed = signal_feeder(source)
    reader = FrameReader(video, pace=False)
    got_queue, got_occ, times, crossings = [], [], [], 0
    last_signal = None
    try:
        for row in truth["frames"]:
            try:
                frame, _ = reader.read()
            except DeviceTimeout:
                break
            if feed is not None and row["signal"] != last_signal:
                feed(row["signal"] == "red")  # type: ignore[operator]
                last_signal = row["signal"]
            t0 = time.perf_counter()
            state = source.pipeline.process(frame, row["t"]).state
            times.append(time.perf_counter() - t0)
            got_queue.append(state.queue["approach"])
            got_occ.append(state.occupancy["approach"])
            crossings += sum(1 for c in state.crossings if c.direction == truth["line_directions"][0])
    finally:
        reader.close()
    frames = truth["frames"][: len(got_queue)]
    red = [i for i, row in enumerate(frames) if row["signal"] == "red"]
    q_err = [abs(got_queue[i] - frames[i]["queue"]) for i in red]
    o_err = [abs(got_occ[i] - frames[i]["in_zone"]) for i in red]
    return {
        "fps": truth["fps"],
        "frames": len(frames),
        "queue_mae_red": statistics.fmean(q_err),
        "queue_max_err_red": max(q_err),
        "occupancy_mae_red": statistics.fmean(o_err),
        "crossings": crossings,
        "crossings_truth": frames[-1]["crossings"],
        "ms_per_frame_median": 1000 * statistics.median(times),
        "signal_fed": feed is not None,
        "queue_series": got_queue[:: max(1, round(truth["fps"]))],
    }


if __name__ == "__main__":
    result = evaluate(sys.argv[1], sys.argv[2])
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result))
