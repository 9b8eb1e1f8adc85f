"""The runtime: writer, supervisor, health endpoint, start-up reports, graceful shutdown."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from pathlib import Path

import pytest

from agent.app import Agent
from agent.config import parse_config
from agent.supervisor import Supervisor
from agent.writer import StoreWriter
from kernel.errors import StoreError
from kernel.metrics import Metrics
from kernel.readings import Priority, Reading
from sync.store import Store
from tests.conftest import free_port


def _reading(i: int) -> Reading:
    return Reading("dev", "p", float(i), 1_700_000_000.0 + i)


async def test_writer_commits_in_batches(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", "site-a")
    writer = StoreWriter(store, Metrics(), queue_size=1000, commit_interval_s=0.02)
    task = asyncio.create_task(writer.run())
    for i in range(10):
        await writer.put([_reading(i * 10 + j) for j in range(10)])
    for _ in range(100):
        if writer.committed == 100:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    assert [s.reading.value for s in store.pending(1000)] == [float(i) for i in range(100)]
    store.close()


class _GatedStore(Store):
    """A store whose appends wait on a gate, or fail a set number of times (disk trouble)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.gate.set()
        self.failures_left = 0

    def append(self, readings):  # type: ignore[no-untyped-def]
        self.gate.wait(10)
        if self.failures_left:
            self.failures_left -= 1
            raise StoreError("disk I/O error (injected)")
        return super().append(readings)


async def test_writer_backpressure_when_store_stalls(tmp_path: Path) -> None:
    store = _GatedStore(tmp_path / "s.db", "site-a")
    writer = StoreWriter(store, Metrics(), queue_size=100, commit_interval_s=0.01, max_batch=100)
    store.gate.clear()
    task = asyncio.create_task(writer.run())
    await writer.put([_reading(i) for i in range(100)])
    blocked = asyncio.create_task(writer.put([_reading(100)]))
    await asyncio.sleep(0.2)
    assert not blocked.done(), "put must wait while the queue is full"
    store.gate.set()
    await asyncio.wait_for(blocked, 5)
    await writer.flush()
    task.cancel()
    assert len(store.pending(1000)) == 101
    store.close()


async def test_writer_retries_disk_errors_without_losing_readings(tmp_path: Path) -> None:
    store = _GatedStore(tmp_path / "s.db", "site-a")
    store.failures_left = 3
    metrics = Metrics()
    writer = StoreWriter(store, metrics, queue_size=1000, commit_interval_s=0.01)
    task = asyncio.create_task(writer.run())
    await writer.put([_reading(i) for i in range(50)])
    for _ in range(200):
        if writer.committed == 50:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    assert writer.committed == 50
    assert metrics.total("kbe_store_errors_total") == 3
    assert [s.reading.value for s in store.pending(100)] == [float(i) for i in range(50)]
    store.close()


async def test_supervisor_restarts_then_cools_down() -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("device exploded")

    sup = Supervisor(Metrics(), max_restarts=3, window_s=0.5, backoff_s=0.01)
    sup.start("flaky", flaky)
    for _ in range(100):
        if sup.states["flaky"].state == "cooling-down":
            break
        await asyncio.sleep(0.01)
    assert sup.states["flaky"].state == "cooling-down"
    assert runs == 4
    assert not sup.healthy()
    assert sup.states["flaky"].last_error == "RuntimeError: device exploded"
    await asyncio.sleep(0.7)
    assert runs > 4, "after cooling down the task gets a fresh budget"
    await sup.stop()


async def test_supervisor_keeps_other_tasks_running() -> None:
    ticks = 0

    async def steady() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def broken() -> None:
        raise ValueError("bad frame")

    sup = Supervisor(Metrics(), max_restarts=2, window_s=5, backoff_s=0.01)
    sup.start("steady", steady)
    sup.start("broken", broken)
    await asyncio.sleep(0.3)
    assert ticks > 10
    assert sup.states["steady"].state == "running"
    await sup.stop()


def _site(tmp_path: Path, port: int) -> dict:
    return {
        "site": {"id": "bn-rt-01", "name": "Runtime test", "location": {"lat": 21.19, "lon": 106.08}},
        "devices": [{"driver": "system", "name": "board", "period_s": 1}],
        "store": {"path": str(tmp_path / "store.db"), "commit_interval_s": 0.02},
        "health": {"listen": f"127.0.0.1:{port}"},
    }


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


async def test_agent_runs_serves_health_and_flushes_on_shutdown(tmp_path: Path) -> None:
    port = free_port()
    cfg = parse_config(_site(tmp_path, port))
    agent = Agent(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(1.5)
    status, metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert "kbe_buffer_depth" in metrics
    assert "# TYPE kbe_readings_total counter" in metrics  # prometheus_client, one prefix
    assert "kbe_process_resident_memory_bytes" in metrics
    assert 'kbe_build_info{version="' in metrics
    status, health = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/health")
    assert '"ok": true' in health
    stop.set()
    await asyncio.wait_for(run, 10)
    with Store(tmp_path / "store.db", "bn-rt-01") as store:
        rows = [s.reading for s in store.pending(1000)]
    assert (rows[0].device, rows[0].point) == ("agent", "started")
    assert rows[0].priority == Priority.EVENT
    assert {r.point for r in rows if r.device == "board"} >= {"disk_free", "load1"}


async def test_agent_reports_quarantined_store(tmp_path: Path) -> None:
    # An agent store (its .seq reservation beside it) that got overwritten: quarantined, not refused.
    with Store(tmp_path / "store.db", "bn-rt-01") as old:
        old.append([Reading("board", "load1", 0.5, 1.0)])
    (tmp_path / "store.db").write_bytes(b"not a database at all" * 100)
    cfg = parse_config(_site(tmp_path, free_port()))
    agent = Agent(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(run, 10)
    quarantined = list(tmp_path.glob("store.db.corrupt-*"))
    assert len(quarantined) == 1
    with Store(tmp_path / "store.db", "bn-rt-01") as store:
        alarms = store.pending(10, priority=Priority.ALARM)
    assert len(alarms) == 1
    assert alarms[0].reading.point == "store_quarantined"
    assert alarms[0].reading.value == str(quarantined[0])


@pytest.mark.parametrize("json_logs", [True, False])
def test_logging_setup(tmp_path: Path, json_logs: bool, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from agent.app import setup_logging

    data = _site(tmp_path, 0)
    data["logging"] = {"level": "INFO", "json": json_logs}
    setup_logging(parse_config(data))
    logging.getLogger("kbe.test").info("hello %s", "field")
    err = capsys.readouterr().err
    assert ('"msg": "hello field"' in err) == json_logs
    assert "hello field" in err


async def test_flush_while_the_writer_runs_commits_each_reading_once(tmp_path: Path) -> None:
    store = _GatedStore(tmp_path / "s.db", "site-a")
    writer = StoreWriter(store, Metrics(), queue_size=10_000, commit_interval_s=0.001, max_batch=50)
    task = asyncio.create_task(writer.run())
    store.gate.clear()  # hold the run loop inside a commit
    await writer.put([_reading(i) for i in range(500)])
    await asyncio.sleep(0.05)
    flush = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)
    store.gate.set()
    await asyncio.wait_for(flush, 10)
    task.cancel()
    assert [s.reading.value for s in store.pending(1000)] == [float(i) for i in range(500)]
    store.close()


async def test_systemd_ready_and_watchdog_notifications(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd (NOTIFY_SOCKET, WATCHDOG_USEC) the agent says READY=1, pets the watchdog, says STOPPING=1."""
    import socket

    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # pet every 0.2 s
    agent = Agent(parse_config(_site(tmp_path, free_port())))
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.wait_for(run, 10)
    messages = []
    while True:
        try:
            messages.append(listener.recv(4096).decode())
        except BlockingIOError:
            break
    listener.close()
    assert messages[0] == "READY=1"
    assert messages.count("WATCHDOG=1") >= 3
    assert messages[-1] == "STOPPING=1"
