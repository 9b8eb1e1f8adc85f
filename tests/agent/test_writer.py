"""The writer between acquisition and the store (agent/writer.py), on a real SQLite store: the queue
is bounded (a full queue makes ``put`` wait, exactly at the bound), a full batch wakes the writer at
once, commits are at most ``max_batch`` readings, a failing disk is retried with doubling backoff
and nothing queued is dropped, and the counters the health check reads move."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agent.writer import StoreWriter
from kernel.errors import StoreError
from kernel.metrics import Metrics
from kernel.readings import Reading
from sync.store import Store

_sleep = asyncio.sleep  # the real one: one test records the writer's sleeps
_LONG = 3600.0  # a commit interval that never elapses within a test: only a wakeup commits


class _RecordingStore(Store):
    """A real store that remembers the size of every append and can fail the next few."""

    def __init__(self, path: Path, fail: int = 0) -> None:
        super().__init__(path, "site")
        self.batches: list[int] = []
        self.fail = fail

    def __enter__(self) -> _RecordingStore:
        return self

    def append(self, readings: Sequence[Reading]) -> list[int]:
        if self.fail:
            self.fail -= 1
            raise StoreError("disk stalled")
        self.batches.append(len(readings))
        return super().append(readings)


def _readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading("dev", "p", float(i), 1_700_000_000.0 + i) for i in range(start, start + n)]


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async def wait() -> None:
        while not cond():
            await _sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_put_waits_only_past_the_bound_and_resumes_after_a_commit(tmp_path: Path) -> None:
    metrics = Metrics()
    with _RecordingStore(tmp_path / "s.db") as store:
        writer = StoreWriter(store, metrics, queue_size=10, commit_interval_s=_LONG)
        await writer.put([])
        assert len(writer) == 0
        await writer.put(_readings(7))
        await asyncio.wait_for(writer.put(_readings(3, 7)), 1)  # exactly full: no wait
        assert len(writer) == 10
        assert metrics.get("kbe_writer_queue") == 10
        assert metrics.get("kbe_writer_backpressure_total") == 0
        blocked = asyncio.create_task(writer.put(_readings(1, 10)))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        assert metrics.get("kbe_writer_backpressure_total") == 1
        await writer.flush()
        await asyncio.wait_for(blocked, 5)  # the commit made room
        await writer.flush()
        assert len(writer) == 0
        assert [s.reading.ts for s in store.pending(100)] == [r.ts for r in _readings(11)]


async def test_a_put_larger_than_the_queue_is_taken_when_the_queue_is_empty(tmp_path: Path) -> None:
    with _RecordingStore(tmp_path / "s.db") as store:
        writer = StoreWriter(store, Metrics(), queue_size=5, commit_interval_s=_LONG)
        await asyncio.wait_for(writer.put(_readings(8)), 1)
        assert len(writer) == 8


async def test_a_full_batch_wakes_the_writer_and_it_commits_in_batches_of_max_batch(tmp_path: Path) -> None:
    metrics = Metrics()
    with _RecordingStore(tmp_path / "s.db") as store:
        writer = StoreWriter(store, metrics, queue_size=100, commit_interval_s=_LONG, max_batch=5)
        before = writer.last_commit_mono
        task = asyncio.create_task(writer.run())
        await asyncio.sleep(0.05)
        await writer.put(_readings(4))
        await asyncio.sleep(0.2)
        assert store.batches == []  # below max_batch: waits for the interval
        await writer.put(_readings(8, 4))  # 12 queued: past max_batch, the writer wakes
        await _until(lambda: writer.committed == 12)
        assert store.batches == [5, 5, 2]  # one wakeup commits all, max_batch at a time
        assert len(writer) == 0
        assert writer.last_commit_mono > before
        assert metrics.get("kbe_readings_total") == 12
        await writer.put(_readings(1, 12))  # the wakeup was cleared: this one waits for the interval
        await asyncio.sleep(0.2)
        assert writer.committed == 12
        await _stop(task)


async def test_the_commit_interval_commits_a_partial_batch(tmp_path: Path) -> None:
    with _RecordingStore(tmp_path / "s.db") as store:
        writer = StoreWriter(store, Metrics(), queue_size=100, commit_interval_s=0.05, max_batch=50)
        task = asyncio.create_task(writer.run())
        await writer.put(_readings(3))
        await _until(lambda: writer.committed == 3)
        assert store.batches == [3]
        await _stop(task)


async def test_the_default_batch_is_20000_readings(tmp_path: Path) -> None:
    """The agent leaves ``max_batch`` at its default: one commit holds at most 20,000 readings."""
    with _RecordingStore(tmp_path / "s.db") as store:
        writer = StoreWriter(store, Metrics(), queue_size=30_000)
        await writer.put(_readings(20_001))
        await writer.flush()
        assert store.batches == [20_000, 1]


async def test_a_failing_disk_is_retried_with_doubling_capped_backoff_and_drops_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_sleep = asyncio.sleep
    waits: list[float] = []

    async def recorded_sleep(delay: float, *args: object) -> None:
        waits.append(delay)
        await real_sleep(0)

    metrics = Metrics()
    with _RecordingStore(tmp_path / "s.db", fail=8) as store:
        writer = StoreWriter(store, metrics, queue_size=100, commit_interval_s=0.01)
        await writer.put(_readings(3))
        monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
        task = asyncio.create_task(writer.run())
        await _until(lambda: writer.committed == 3)
        assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0])
        assert metrics.get("kbe_store_errors_total") == 8
        store.fail = 1  # after a success the backoff starts again from 0.1
        waits.clear()
        await writer.put(_readings(2, 3))
        await _until(lambda: writer.committed == 5)
        assert waits == pytest.approx([0.1])
        await _stop(task)
        monkeypatch.undo()
        assert [s.reading.ts for s in store.pending(100)] == [r.ts for r in _readings(5)]


async def test_an_idle_writer_waits_for_the_interval_instead_of_spinning(tmp_path: Path) -> None:
    """With nothing queued a commit attempt reports 0 readings: the loop then waits for the next
    interval or wakeup, even when ``max_batch`` is 1."""
    with _RecordingStore(tmp_path / "s.db") as store:
        writer = StoreWriter(store, Metrics(), queue_size=100, commit_interval_s=_LONG, max_batch=1)
        attempts = 0
        commit = writer._commit_locked

        async def counted() -> int:
            nonlocal attempts
            attempts += 1
            return await commit()

        writer._commit_locked = counted  # type: ignore[method-assign]
        task = asyncio.create_task(writer.run())
        await writer.put(_readings(1))
        await _until(lambda: writer.committed == 1)
        await asyncio.sleep(0.2)
        assert attempts <= 3
        await _stop(task)


async def test_the_metrics_page_describes_accepted_readings(tmp_path: Path) -> None:
    metrics = Metrics()
    with _RecordingStore(tmp_path / "s.db") as store:
        writer = StoreWriter(store, metrics, queue_size=100, commit_interval_s=_LONG)
        await writer.put(_readings(2))
        await writer.flush()
    page = metrics.render()
    assert "# HELP kbe_readings_total Readings accepted into the store.\n" in page
    assert "kbe_readings_total 2.0\n" in page
