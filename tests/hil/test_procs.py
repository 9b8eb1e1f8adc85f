"""Process management: a private broker stopped and started on its port, SIGKILL and restart, cleanup."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from hil.procs import Broker, ManagedProcess, ProcessSet, port_open, wait_port
from hil.sources import proc_cpu_seconds, proc_rss_kib
from kernel.errors import HilFailure
from tests.conftest import free_port


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
