"""Runs ``edge-agent run`` with other garbage-collector settings than :mod:`kernel.collector`'s, to compare.

Put this folder on ``PYTHONPATH`` and set ``KBE_GC_VARIANT``; in the process running ``-m agent run``
(and its re-exec after the config hand-over):

- ``default``: ``gc.set_threshold`` and ``gc.freeze`` become no-ops: CPython's (700, 10, 10), nothing frozen;
- ``freeze-only``: the thresholds stay CPython's, the start-up objects are frozen;
- ``thresholds-only``: the agent's thresholds, nothing frozen;
- ``full-every-N``: the agent's settings, plus a full collection every N seconds from a thread.

Only a benchmark uses this (``bench/bench_rss_soak.py --gc VARIANT``); the agent has no switch for it.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time


def _keep_defaults(*_args: object) -> None:
    """Stand-in for ``gc.set_threshold`` or ``gc.freeze``: change nothing."""


def _collect_every(seconds: float) -> None:
    def loop() -> None:
        while True:
            time.sleep(seconds)
            gc.collect()

    threading.Thread(target=loop, name="gc-full", daemon=True).start()


_VARIANT = os.environ.get("KBE_GC_VARIANT", "")
if _VARIANT and sys.orig_argv[1:4] == ["-m", "agent", "run"]:
    if _VARIANT in ("default", "freeze-only"):
        gc.set_threshold = _keep_defaults
    if _VARIANT in ("default", "thresholds-only"):
        gc.freeze = _keep_defaults
    if _VARIANT.startswith("full-every-"):
        _collect_every(float(_VARIANT.removeprefix("full-every-")))
