"""Python's cyclic garbage collector, set for a long-running agent that makes an object per reading.

The agent allocates a few objects for every point it polls (70,000 a second at its ceiling) and
almost none of them take part in reference cycles: reference counting frees them. With CPython's
default thresholds (700, 10, 10) the collector still ran 84 young and 0.7 full collections a second
at 1,400 devices, and each full collection walked every object made at start-up (modules, config,
devices, caches): 13 % of the agent's CPU went to finding nothing (measured with ``gc.callbacks`` on
``bench/bench_ladder.py --devices 1400``; docs/benchmarks.md).

Two settings take that cost away without letting cyclic garbage pile up:

- :func:`freeze_started` moves what exists once the agent has started into the collector's
  permanent generation (``gc.freeze``): it is never walked again, and still freed by reference
  counting like anything else. :func:`thaw` hands it back before a restart in the same process, so
  a replaced agent core's cycles are collected.
- :data:`THRESHOLDS`: a young collection every 10,000 new container objects instead of 700, an
  older one every 20 young ones, a full one every 20 older ones (and, as always in CPython 3.11, only
  once the objects that survived since the last full collection are a quarter of those it kept).
  A cycle made while the agent runs is still found within 10,000 allocations if it dies young.
- :func:`sweep`: a full collection every :data:`FULL_EVERY_S` seconds. With the higher thresholds,
  cycles that outlive a young collection (paho builds one per message it matches, a ``ctypes``
  class or a traceback one each) waited for a rare full one, and the arenas they held kept the
  agent's RSS creeping: over 35 minutes at 2,000 readings/s, side by side, +1.5 MB with the
  thresholds alone, +0.7 MB with this sweep, +0.4 MB with the freeze alone (``bench/bench_rss_soak.py
  --gc``, docs/benchmarks.md). After the freeze a full collection walks only what was made since
  start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

THRESHOLDS = (10_000, 20, 20)
FULL_EVERY_S = 60.0


def tune() -> None:
    """Set the collector's thresholds (:data:`THRESHOLDS`)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_started() -> int:
    """Collect once, then keep everything alive now out of later collections; how many objects."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw() -> None:
    """Give the frozen objects back to the collector (before an in-process restart)."""
    gc.unfreeze()


async def sweep(stop: asyncio.Event, every_s: float = FULL_EVERY_S) -> None:
    """A full collection every ``every_s`` seconds until ``stop`` is set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if not stop.is_set():
            gc.collect()
