"""Counts the garbage collector's work in an ``edge-agent run`` process, from outside the agent.

Put this folder on ``PYTHONPATH`` and set ``KBE_GC_PROBE`` to a file path: every Python process
started with that environment imports this module at start-up (``site``), and the one running
``-m agent run`` registers a ``gc.callbacks`` hook that times each collection (thread CPU time) and
appends, every 15 s, one line per generation: collections, seconds, objects collected, with the
process's CPU seconds and the thresholds and frozen count in force. Nothing else is changed.

    KBE_GC_PROBE=gc.txt PYTHONPATH=.:bench/gcprobe .venv/bin/python bench/bench_ladder.py --devices 1400 --plateau ''
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

_OUT = os.environ.get("KBE_GC_PROBE", "")


def _install(out: str) -> None:
    stats = [[0, 0.0, 0] for _ in range(3)]
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
            return
        s = stats[info["generation"]]
        s[0] += 1
        s[1] += time.thread_time() - started[0]
        s[2] += info["collected"]

    def report() -> None:
        t0, c0 = time.monotonic(), time.process_time()
        while True:
            time.sleep(15)
            gens = " | ".join(f"gen{i}: {n} collections {sec:.2f} s {coll} collected" for i, (n, sec, coll) in enumerate(stats))
            with open(out, "a", encoding="utf-8") as f:
                f.write(
                    f"pid {os.getpid()} {time.monotonic() - t0:.0f} s, process CPU {time.process_time() - c0:.1f} s, "
                    f"GC {sum(s[1] for s in stats):.2f} s | {gens} | thresholds {gc.get_threshold()} "
                    f"frozen {gc.get_freeze_count()}\n"
                )

    gc.callbacks.append(timed)
    threading.Thread(target=report, name="gc-probe", daemon=True).start()


if _OUT and sys.orig_argv[1:4] == ["-m", "agent", "run"]:
    _install(_OUT)
