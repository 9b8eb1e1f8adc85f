"""Queue-length and stop-line crossing error at 5, 10 and 15 fps, before (a baseline git ref, main
by default) and after (this checkout), in the same run.

    PYTHONPATH=. python bench/bench_queue.py [--ref main] [--fps 5 10 15] [--seed 1]

The clip is hil/camera_video.py's junction approach (1280x720, 170 s: two 60 s reds with queues
of 4 and 5 motorcycles cut from scikit-image's stereo_motorcycle photograph on its gravel
photograph, free traffic in the other lane, cast shadows, dark vehicles, noise and a brightness
drift), written once per frame rate. Each checkout scores it with bench/queue_eval.py in its own
process (a default CameraSource; the signal fed where the checkout can listen to it): mean and
max absolute queue error over the red frames, crossings against the truth, median ms per frame.
The two run one after the other per frame rate; the load average is printed beside each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from hil.camera_video import ApproachVideo

REPO = Path(__file__).resolve().parent.parent


def export(ref: str, into: Path) -> Path:
    """The tree of ``ref`` (git archive), to run the baseline's code."""
    archive = into / "ref.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "ref", filter="data")
    return into / "ref"


def score(checkout: Path, video: Path, truth: Path) -> dict:
    """bench/queue_eval.py of this checkout, run against ``checkout``'s camera code."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "queue_eval.py"), str(video), str(truth)],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--ref", default="13a3abc", help="the tree measured as \"before\" (default: main before the video work)")
    ap.add_argument("--fps", type=float, nargs="+", default=[5.0, 10.0, 15.0])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = export(args.ref, Path(tmp))
        for fps in args.fps:
            video, truth = ApproachVideo(fps, args.seed).write(Path(tmp) / "clips")
            before = score(base, video, truth)
            after = score(REPO, video, truth)
            rows.append((fps, before, after))
            print(json.dumps({"fps": fps, "before": before, "after": after}), file=sys.stderr)
    print(f"clip: hil/camera_video.py seed {args.seed}, 1280x720, 170 s; before = {args.ref}, after = this checkout")
    print(
        "| fps | Queue MAE in red, before | Queue MAE in red, after | Max queue error, before |"
        " Max queue error, after | Crossings of 13, before | Crossings of 13, after |"
        " ms/frame before → after (ratio; load before / after) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fps, b, a in rows:
        print(
            f"| {fps:g} | {b['queue_mae_red']:.2f} | **{a['queue_mae_red']:.2f}** |"
            f" {b['queue_max_err_red']} | {a['queue_max_err_red']} | {b['crossings']} | {a['crossings']} |"
            f" {b['ms_per_frame_median']:.1f} → {a['ms_per_frame_median']:.1f}"
            f" ({a['ms_per_frame_median'] / b['ms_per_frame_median']:.2f}x;"
            f" load {b['load']:.1f} / {a['load']:.1f}) |"
        )


if __name__ == "__main__":
    main()
