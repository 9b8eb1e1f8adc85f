"""The receiver's fast batch decoder, this tree against another (e.g. ``main`` before the poison checks).

Decodes one typical batch (as the agent writes it) with :func:`sync.receiver_decode.decode_batch_fast`
in a child process per tree, alternating the trees round by round so both see the same load, and
prints µs per batch and per reading, their ratio and the load average.

    git archive main | tar -x -C ../before
    PYTHONPATH=. .venv/bin/python bench/bench_receiver_decode.py --before ../before
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import sys, time
from kernel.readings import Reading
from sync import wire
from sync.receiver_decode import decode_batch_fast
n, loops = int(sys.argv[1]), int(sys.argv[2])
rs = [(i + 1, Reading(f"meter-{i % 20:02d}", f"p{i % 5}", 230.0 + i * 0.01, 1.79e9 + i, unit="V",
                      meta={"model": "m1"} if i % 50 == 0 else None)) for i in range(n)]
doc = wire.batch_json("site-a", "b-1", 1.79e9, rs, wire.BufferStats(depth=n, bytes=0))
frame = wire.Frame(wire.CODEC_JSON, b"", doc, "b-1")
assert type(decode_batch_fast(frame)).__name__ == "FastBatch"
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter()
    for _ in range(loops):
        decode_batch_fast(frame)
    best = min(best, (time.perf_counter() - t0) / loops)
print(best)
"""


def _run(tree: Path, readings: int, loops: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(readings), str(loops)], env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def main() -> None:
    """Time both trees, alternating, and print the figures with the load average."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other tree (the baseline)")
    ap.add_argument("--readings", type=int, default=500)
    ap.add_argument("--loops", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    now: list[float] = []
    before: list[float] = []
    for i in range(args.rounds):  # ABBA: neither tree always goes first
        pair = [(before, args.before), (now, here)]
        for out, tree in pair if i % 2 == 0 else reversed(pair):
            out.append(_run(tree, args.readings, args.loops))
    b, n = statistics.median(before), statistics.median(now)
    load = os.getloadavg()[0]
    print(f"load average (1 min) {load:.1f}; {args.readings}-reading batch, median of {args.rounds} rounds")
    print(f"before: {b * 1e6:9.1f} µs/batch  {b * 1e6 / args.readings:.3f} µs/reading")
    print(f"now:    {n * 1e6:9.1f} µs/batch  {n * 1e6 / args.readings:.3f} µs/reading")
    print(f"ratio now / before: {n / b:.3f}")


if __name__ == "__main__":
    main()
