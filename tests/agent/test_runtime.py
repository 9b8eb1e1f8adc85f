"""The runtime: writer, supervisor, health endpoint, start-up reports, graceful shutdown."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Callable
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
from tests.conftest import free_port, until


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
    await until(lambda: runs > 4, "after cooling down the task gets a fresh budget")
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
    # Once the broken task has spent its restarts, the steady one is still ticking.
    await until(lambda: sup.states["broken"].state == "cooling-down", "the broken task cooling down")
    mark = ticks
    await until(lambda: ticks > mark + 10, "the steady task ticking on")
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


def _counter(text: str, name: str) -> float:
    """The value of an unlabelled counter in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def until_metrics(port: int, cond: Callable[[str], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until the agent's /metrics answers with text for which ``cond`` holds."""
    text = ""

    def fetch() -> str:
        try:
            return _get(f"http://127.0.0.1:{port}/metrics")[1]
        except OSError:
            return ""  # not listening yet

    async def poll() -> None:
        nonlocal text
        while True:
            text = await asyncio.to_thread(fetch)
            if text and cond(text):
                return
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"not within {timeout:.0f} s: {what}\n{text[-2000:]}") from None


async def test_agent_runs_serves_health_and_flushes_on_shutdown(tmp_path: Path) -> None:
    port = free_port()
    cfg = parse_config(_site(tmp_path, port))
    agent = Agent(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    # Up (the endpoint answers), and more than the start event accepted (the board's first poll).
    await until_metrics(port, lambda text: _counter(text, "kbe_readings_total") > 1, "the board's first poll stored")
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
    messages: list[str] = []

    def received() -> list[str]:
        while True:
            try:
                messages.append(listener.recv(4096).decode())
            except BlockingIOError:
                return messages

    await until(lambda: received().count("WATCHDOG=1") >= 3, "three watchdog pets")
    stop.set()
    await asyncio.wait_for(run, 10)
    received()
    listener.close()
    assert messages[0] == "READY=1"
    assert messages.count("WATCHDOG=1") >= 3
    assert messages[-1] == "STOPPING=1"


async def test_a_hung_task_stops_the_systemd_watchdog_feed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog is fed only while every supervised task is alive: an intersection whose thread
    hangs in its output (a driver call that never returns) stops the feed until it ticks again."""
    import socket

    from control.traffic.card import program_card
    from control.traffic.source import TrafficSource
    from drivers.signals.emulator import ControllerEmulator, DirectLink
    from drivers.signals.modbus import ModbusSignalController
    from tests.traffic.helpers import junction

    class HangingLink(DirectLink):
        """The emulated cabinet, reached through a driver that can be made to hang."""

        def __init__(self, emu: ControllerEmulator) -> None:
            super().__init__(emu)
            self.free = threading.Event()
            self.free.set()

        def write_registers(self, address: int, values: list[int]) -> None:
            self.free.wait()
            super().write_registers(address, values)

    ix = junction()
    link = HangingLink(ControllerEmulator(program_card(ix), watchdog_s=60))
    traffic = TrafficSource(ix, "Asia/Ho_Chi_Minh", ModbusSignalController(tuple(g.name for g in ix.groups), link))
    traffic.stall_s = 0.6

    # A real notify socket, drained all the time (a datagram socket's queue is short).
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.setblocking(False)
    messages: list[tuple[float, str]] = []

    async def drain() -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                messages.append((loop.time(), listener.recv(4096).decode()))
            except BlockingIOError:
                await asyncio.sleep(0.02)

    def pets(since: float, until: float) -> int:
        return sum(1 for t, m in messages if m == "WATCHDOG=1" and since <= t < until)

    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # pet every 0.2 s
    agent = Agent(parse_config(_site(tmp_path, free_port())))
    monkeypatch.setattr(agent, "build_sources", lambda: [traffic])
    loop = asyncio.get_running_loop()
    drainer = asyncio.create_task(drain())
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        t0 = loop.time()
        await until(lambda: pets(t0, loop.time()) >= 4, "four pets while every task ticks")
        assert messages[0][1] == "READY=1"
        link.free.clear()  # the intersection's thread hangs in its next write
        # The stall shows after stall_s; a pet sent before it did may still be in the socket: the
        # drainer (every 20 ms on this loop) has read it by the end of the 0.3 s below.
        await until(lambda: not agent.health()["ok"], "the hung task seen as stalled")
        await asyncio.sleep(0.3)
        t1 = loop.time()
        await asyncio.sleep(1.5)  # over seven pet periods
        assert pets(t1, loop.time()) == 0
        health = agent.health()
        assert health["ok"] is False
        assert any("traffic:ltt-ngt: no tick" in s for s in health["stalled"])
        link.free.set()  # it ticks again: the feed resumes
        t2 = loop.time()
        await until(lambda: pets(t2, loop.time()) >= 3, "the feed resumed")
    finally:
        link.free.set()
        stop.set()
        await asyncio.wait_for(run, 15)
        drainer.cancel()
        listener.close()
