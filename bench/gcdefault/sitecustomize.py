"""Runs ``edge-agent run`` with other garbage-collector settings than :mod:`kernel.collector`'s, to compare.

Put this folder on ``PYTHONPATH`` and set ``KBE_GC_VARIANT``; in the process running ``-m agent run``
(and its re-exec after the config hand-over):

- ``default``: CPython's (700, 10, 10), nothing frozen, no sweep;
- ``freeze-only``: CPython's thresholds, the start-up objects frozen, no sweep;
- ``thresholds-only``: the agent's thresholds, nothing frozen, no sweep;
- ``no-sweep``: the agent's thresholds and freeze without its full collection every minute.

``gc.set_threshold`` and ``gc.freeze`` become no-ops where the variant leaves them out, and
:func:`kernel.collector.sweep` waits for the stop without collecting. Only a benchmark uses this
(``bench/bench_rss_soak.py --gc VARIANT``); the agent has no switch for it.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

VARIANTS = ("default", "freeze-only", "thresholds-only", "no-sweep")


def _keep_defaults(*_args: object) -> None:
    """Stand-in for ``gc.set_threshold`` or ``gc.freeze``: change nothing."""


async def _no_sweep(stop: Any, every_s: float = 0.0) -> None:
    """Stand-in for :func:`kernel.collector.sweep`: wait for the stop, collect nothing."""
    await stop.wait()


_VARIANT = os.environ.get("KBE_GC_VARIANT", "")
if _VARIANT and sys.orig_argv[1:4] == ["-m", "agent", "run"]:
    if _VARIANT not in VARIANTS:
        raise SystemExit(f"KBE_GC_VARIANT={_VARIANT!r}: one of {', '.join(VARIANTS)}")
    from kernel import collector

    collector.sweep = _no_sweep  # type: ignore[assignment]
    if _VARIANT in ("default", "freeze-only"):
        gc.set_threshold = _keep_defaults
    if _VARIANT in ("default", "thresholds-only"):
        gc.freeze = _keep_defaults
