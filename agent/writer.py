"""The bounded queue between acquisition and the store, and the task that commits it.

Acquisition calls :meth:`StoreWriter.put`; it returns at once unless the queue is full (the disk is
stalled), and never waits on the network. The writer commits whatever is queued every
``commit_interval_s`` in one transaction, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from itertools import islice

from kernel.errors import StoreError
from kernel.metrics import Metrics
from kernel.readings import Reading
from sync.store import Store

log = logging.getLogger("kbe.writer")


class StoreWriter:
    """A :class:`~kernel.sink.ReadingSink` that commits to a :class:`~sync.store.Store` in batches."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        queue_size: int = 50_000,
        commit_interval_s: float = 0.05,
        max_batch: int = 20_000,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.queue_size = queue_size
        self.commit_interval_s = commit_interval_s
        self.max_batch = max_batch
        self._queue: deque[Reading] = deque()
        self._space = asyncio.Condition()
        self._wakeup = asyncio.Event()
        # One commit at a time: the run loop and a shutdown flush must never commit the same readings.
        self._commit_lock = asyncio.Lock()
        self.last_commit_mono = time.monotonic()
        self.committed = 0
        metrics.describe("kbe_readings_total", "Readings accepted into the store.")
        metrics.gauge_callback("kbe_writer_queue", lambda: float(len(self._queue)))

    def __len__(self) -> int:
        return len(self._queue)

    async def put(self, readings: Sequence[Reading]) -> None:
        """Queue readings; waits only while the queue is full."""
        if not readings:
            return
        async with self._space:
            while len(self._queue) + len(readings) > self.queue_size and self._queue:
                self.metrics.inc("kbe_writer_backpressure_total")
                await self._space.wait()
            self._queue.extend(readings)
        if len(self._queue) >= self.max_batch:
            self._wakeup.set()

    async def _commit_some(self) -> int:
        # flush() and run() both commit: the lock keeps them from committing the same batch twice,
        # and the shield lets a commit whose caller is cancelled (shutdown) still take its batch off
        # the queue, so the final flush does not append it again.
        return await asyncio.shield(self._commit_locked())

    async def _commit_locked(self) -> int:
        async with self._commit_lock:
            if not self._queue:
                return 0
            n = min(len(self._queue), self.max_batch)
            batch = list(islice(self._queue, n))  # indexing a deque is slow away from its ends
            await asyncio.to_thread(self.store.append, batch)
            # Only now are they accepted; take them off the queue.
            for _ in range(n):
                self._queue.popleft()
            self.committed += n
            self.last_commit_mono = time.monotonic()
            self.metrics.inc("kbe_readings_total", n)
        async with self._space:
            self._space.notify_all()
        return n

    async def run(self) -> None:
        """Commit until cancelled. A failing disk is retried with backoff; nothing queued is dropped."""
        backoff = 0.1
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.commit_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            try:
                while await self._commit_some() >= self.max_batch:
                    pass
                backoff = 0.1
            except StoreError as exc:
                self.metrics.inc("kbe_store_errors_total")
                log.error(
                    "cannot commit %d queued readings: %s (retrying in %.1fs)", len(self._queue), exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def flush(self) -> None:
        """Commit everything queued now (graceful shutdown)."""
        while self._queue:
            await self._commit_some()
