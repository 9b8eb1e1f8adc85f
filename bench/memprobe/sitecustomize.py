"""Finds what grows in an ``edge-agent run`` process over a soak, from outside the agent.

Put this folder on ``PYTHONPATH`` and set ``KBE_MEM_PROBE`` to a file path: the process running
``-m agent run`` (after the config hand-over's re-exec too) starts :mod:`tracemalloc` (one frame per
allocation), takes a snapshot ``KBE_MEM_PROBE_START`` seconds after start (default 120), then every
``KBE_MEM_PROBE_EVERY`` seconds (default 300) appends the 15 source lines whose live allocations
grew most since that snapshot, and the traced total. tracemalloc slows the agent and costs memory
of its own, so RSS figures of a probed run are not the agent's; what grows is.

    KBE_MEM_PROBE=mem.txt PYTHONPATH=.:bench/memprobe .venv/bin/python bench/bench_rss_soak.py --minutes 30
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc

_OUT = os.environ.get("KBE_MEM_PROBE", "")


def _install(out: str, start_s: float, every_s: float) -> None:
    tracemalloc.start(1)
    skip = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"))

    def report() -> None:
        time.sleep(start_s)
        base = tracemalloc.take_snapshot().filter_traces(skip)
        t0 = time.monotonic()
        while True:
            time.sleep(every_s)
            now = tracemalloc.take_snapshot().filter_traces(skip)
            grown = sorted(now.compare_to(base, "lineno"), key=lambda s: s.size_diff, reverse=True)[:15]
            current, peak = tracemalloc.get_traced_memory()
            with open(out, "a", encoding="utf-8") as f:
                f.write(f"--- pid {os.getpid()}, {(time.monotonic() - t0) / 60:.1f} min after the first snapshot; "
                        f"traced {current / 2**20:.2f} MB (peak {peak / 2**20:.2f})\n")
                for stat in grown:
                    f.write(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {stat.traceback}\n")

    threading.Thread(target=report, name="mem-probe", daemon=True).start()


if _OUT and sys.orig_argv[1:4] == ["-m", "agent", "run"]:
    _install(_OUT, float(os.environ.get("KBE_MEM_PROBE_START", "120")), float(os.environ.get("KBE_MEM_PROBE_EVERY", "300")))
