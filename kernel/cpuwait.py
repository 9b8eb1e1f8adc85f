"""How long this process's threads were ready to run but waited for a core (Linux schedstat).

The kernel counts, per thread, the nanoseconds spent runnable on a run queue without a core: the
second field of ``/proc/self/task/TID/schedstat``. Summed over the threads and divided by the wall
time between two looks, it is the share of the time the process lost to a loaded machine (it can
pass 1 with several threads). Time blocked on I/O, a lock or the GIL is not in it: a thread waiting
for those is not runnable. Where ``/proc`` has no schedstat (not Linux, or a kernel built without
it) :meth:`RunQueueWait.share` returns None and the caller does without.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

TASKS = Path("/proc/self/task")


def parse_schedstat(text: str) -> int:
    """Nanoseconds waited on a run queue from one schedstat line (``run_ns wait_ns timeslices``).

    Raises ``ValueError`` on a line without a numeric second field.
    """
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"schedstat line without a wait field: {text!r}")
    return int(fields[1])


class RunQueueWait:
    """Share of wall time the threads under ``tasks`` spent runnable but waiting for a core.

    Each thread is counted from its own previous value, so a thread that starts between two looks
    adds only its own wait and one that ends takes nothing back.
    """

    def __init__(self, tasks: Path = TASKS, clock: Callable[[], float] = time.monotonic) -> None:
        """Read ``tasks`` (one directory per thread, each with a ``schedstat`` file) against ``clock``."""
        self.tasks = tasks
        self.clock = clock
        self._last: dict[str, int] | None = None
        self._last_t = 0.0

    def read(self) -> dict[str, int] | None:
        """Nanoseconds waited so far, per thread id; None when there is no schedstat to read."""
        try:
            tasks = list(self.tasks.iterdir())
        except OSError:
            return None
        waits: dict[str, int] = {}
        for task in tasks:
            try:
                waits[task.name] = parse_schedstat((task / "schedstat").read_text())
            except (OSError, ValueError):
                continue  # the thread ended meanwhile, or this kernel does not keep the counts
        return waits or None

    def share(self) -> float | None:
        """Waited seconds per wall second since the previous call (None on the first call, or with
        no schedstat)."""
        now, waits = self.clock(), self.read()
        last, last_t = self._last, self._last_t
        self._last, self._last_t = waits, now
        if waits is None or last is None or now <= last_t:
            return None
        waited = sum(max(ns - last.get(tid, 0), 0) for tid, ns in waits.items())
        return waited / 1e9 / (now - last_t)
