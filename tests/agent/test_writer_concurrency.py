"""The writer commits each reading once even when flush() runs while the writer task is committing,
or when the writer task is cancelled mid-commit (graceful shutdown). Found by the HIL bench: the
agent's shutdown flush raced the writer task and stored the last batch twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from agent.writer import StoreWriter
from kernel.metrics import Metrics
from kernel.readings import Reading
from sync.store import Store


class _SlowStore(Store):
    """A store whose commits take a while (a busy SD card)."""

    def append(self, readings: Sequence[Reading]) -> list[int]:
        time.sleep(0.05)
        return super().append(readings)


def _readings(n: int) -> list[Reading]:
    return [Reading("dev", "p", float(i), 1_700_000_000.0 + i) for i in range(n)]


def _stored_ts(store: Store) -> list[float]:
    return [s.reading.ts for s in store.pending(1000)]


async def test_flush_during_a_commit_stores_each_reading_once(tmp_path: Path) -> None:
    store = _SlowStore(tmp_path / "s.db", "site")
    writer = StoreWriter(store, Metrics(), commit_interval_s=0.01)
    task = asyncio.create_task(writer.run())
    await writer.put(_readings(10))
    await asyncio.sleep(0.02)  # the writer task is now inside append
    await writer.put(_readings(15)[10:])
    await writer.flush()
    task.cancel()
    ts = _stored_ts(store)
    assert len(ts) == 15
    assert len(set(ts)) == 15
    assert len(writer) == 0
    store.close()


async def test_cancelled_mid_commit_then_flush_stores_each_reading_once(tmp_path: Path) -> None:
    store = _SlowStore(tmp_path / "s.db", "site")
    writer = StoreWriter(store, Metrics(), commit_interval_s=0.01)
    task = asyncio.create_task(writer.run())
    await writer.put(_readings(10))
    await asyncio.sleep(0.02)
    task.cancel()  # as Agent.shutdown does, while append runs in its thread
    await asyncio.gather(task, return_exceptions=True)
    await writer.flush()
    ts = _stored_ts(store)
    assert sorted(ts) == [1_700_000_000.0 + i for i in range(10)]
    store.close()
