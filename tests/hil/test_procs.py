"""Process management: a private broker stopped and started on its port, SIGKILL and restart, cleanup."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from hil.procs import Broker, ManagedProcess, ProcessSet, _bindable, ephemeral_range, port_open, wait_port
from hil.sources import proc_cpu_seconds, proc_rss_kib
from kernel.errors import HilFailure
from tests.brokers import Mosquitto
from tests.conftest import agent_env, free_port


def _mqtt_ok(port: int) -> bool:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        client.connect("127.0.0.1", port, keepalive=5)
        client.disconnect()
        return True
    except OSError:
        return False


def _live_in_group(pgid: int) -> list[int]:
    """PIDs of the group that are still running (zombies waiting for a reaper do not count)."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry.name))
    return live


def test_broker_stops_and_starts_on_the_same_port(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    try:
        broker.start()
        assert _mqtt_ok(broker.port)
        pid = broker.pid
        broker.stop()
        assert not port_open(broker.port)
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists()
        broker.start()
        assert _mqtt_ok(broker.port)
        assert broker.starts == 2
    finally:
        broker.stop()
    assert "user root" in (tmp_path / "mosquitto.conf").read_text() or os.geteuid() != 0


def test_kill_takes_the_whole_process_group_and_restart_works(tmp_path: Path) -> None:
    # The child starts a grandchild; SIGKILL to the group must take both.
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('RE' + 'ADY', flush=True); time.sleep(60)"
    proc = ManagedProcess("sleeper", [sys.executable, "-c", script], tmp_path / "sleeper.log")
    proc.start()
    deadline = time.monotonic() + 10
    while "READY" not in proc.tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = proc.pid
    assert pid is not None
    assert proc_cpu_seconds(pid) is not None
    assert (proc_rss_kib(pid) or 0) > 1000
    pgid = os.getpgid(pid)
    proc.kill()
    assert not proc.running()
    assert proc.exit_codes == [-9]
    time.sleep(0.2)
    assert _live_in_group(pgid) == []
    proc.start()
    assert proc.running()
    assert proc.stop(timeout=5) == -15
    assert proc.tail().count("--- start") == 2


def test_process_set_stops_everything_still_running(tmp_path: Path) -> None:
    procs = ProcessSet()
    items = [
        procs.add(
            ManagedProcess(
                f"p{i}", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / f"{i}.log"
            )
        )
        for i in range(3)
    ]
    for p in items:
        p.start()
    items[1].stop()
    procs.stop_all(timeout=5)
    assert not any(p.running() for p in items)


def test_wait_port_reports_a_process_that_died(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "quitter", [sys.executable, "-c", "print('bad config'); raise SystemExit(2)"], tmp_path / "q.log"
    )
    proc.start()
    with pytest.raises(HilFailure, match="exited before listening") as info:
        wait_port(free_port(), proc, timeout=10)
    assert "bad config" in str(info.value)


def test_free_port_is_outside_the_ephemeral_range_and_held_for_this_process(tmp_path: Path) -> None:
    lo, hi = ephemeral_range()
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    # Neither a bind to port 0 nor an outgoing connection is ever given one of these ports.
    assert all(not lo <= p <= hi for p in ports)
    # Another process cannot reserve a port this one holds (the lock lives as long as we do) ...
    probe = (
        "import sys; from hil.procs import _reserve; "
        "print(' '.join(str(int(_reserve(int(p)))) for p in sys.argv[1:]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *map(str, ports[:3])], env=agent_env(), capture_output=True, text=True
    )
    assert out.stdout.split() == ["0", "0", "0"], out.stderr
    # ... but can reserve a free one that nobody holds.
    spare = next(p for p in range(ports[0] + 1, lo) if p not in ports and _bindable(p))
    out = subprocess.run([sys.executable, "-c", probe, str(spare)], env=agent_env(), capture_output=True, text=True)
    assert out.stdout.split() == ["1"], out.stderr


def test_a_broker_whose_port_was_taken_before_its_first_start_moves(tmp_path: Path) -> None:
    listening = socket.socket()  # someone listens on it
    bound = socket.socket()  # someone holds it without listening: only the bind fails
    for sock in (listening, bound):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    try:
        for sock, listen in ((listening, True), (bound, False)):
            work = tmp_path / ("listening" if listen else "bound")
            work.mkdir()
            broker = Broker(work)
            taken = broker.port
            sock.bind(("127.0.0.1", taken))
            if listen:
                sock.listen()
            try:
                broker.start()
                assert broker.port != taken
                assert broker.running()
                assert _mqtt_ok(broker.port)
                assert f"listener {broker.port} " in broker.conf.read_text()
            finally:
                broker.stop()
    finally:
        listening.close()
        bound.close()


def test_a_restarted_broker_keeps_its_port_even_when_taken(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start()
    port = broker.port
    broker.stop()
    with socket.socket() as intruder:
        intruder.bind(("127.0.0.1", port))
        intruder.listen()
        with pytest.raises(HilFailure, match=f"port {port} is taken"):
            broker.start()  # its clients know this port: no silent move
    assert broker.port == port
    broker.stop()


def test_a_test_broker_whose_port_was_taken_moves(tmp_path: Path) -> None:
    with socket.socket() as bound:
        broker = Mosquitto(tmp_path / "broker", persistence=False)
        taken = broker.port
        bound.bind(("127.0.0.1", taken))
        with broker:
            assert broker.port != taken
            assert _mqtt_ok(broker.port)
