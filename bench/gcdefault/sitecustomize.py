"""Runs ``edge-agent run`` with CPython's default garbage-collector settings, for a comparison.

Put this folder on ``PYTHONPATH`` and set ``KBE_GC_DEFAULT=1``: in the process running
``-m agent run`` (and its re-exec after the config hand-over), ``gc.set_threshold`` and
``gc.freeze`` become no-ops, so :mod:`kernel.collector` leaves the thresholds at (700, 10, 10) and
freezes nothing. Only a benchmark uses this (``bench/bench_rss_soak.py --gc default``); the agent
itself has no switch for it.
"""

from __future__ import annotations

import gc
import os
import sys


def _keep_defaults(*_args: object) -> None:
    """Stand-in for ``gc.set_threshold`` and ``gc.freeze``: change nothing."""


if os.environ.get("KBE_GC_DEFAULT") == "1" and sys.orig_argv[1:4] == ["-m", "agent", "run"]:
    gc.set_threshold = _keep_defaults
    gc.freeze = _keep_defaults
