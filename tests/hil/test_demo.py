"""``edge-agent demo``: the live table, and nothing left running however the demo ends."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from hil.demo import DemoState, modbus_polls, render_table
from hil.rig import load_rig
from hil.watchdog import watch
from tests.conftest import REPO, agent_argv, agent_env
from tests.hil.test_rigs import _processes_mentioning

T = 1_800_000_000.0


def _table_text(state: DemoState, now: float) -> str:
    from rich.console import Console

    console = Console(record=True, width=160, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_table(state, now))
    return console.export_text()


def test_table_has_a_row_per_device_with_units_success_and_age() -> None:
    state = DemoState.for_rig(load_rig(REPO / "hil" / "rigs" / "demo-site.yaml"))
    state.add_rows(
        [
            (1, "meter-1", "voltage", 230.25, None, "V", 0, T - 3, 2),
            (2, "meter-1", "current", 7.5, None, "A", 0, T - 3, 2),
            (3, "climate", "temperature", 31.0, None, "°C", 0, T - 12, 2),
            (4, "climate", "temperature", None, "timeout", "°C", 2, T - 2, 2),
            (5, "cabinet-io", "door", True, None, "", 0, T - 1, 1),
        ]
    )
    state.add_metrics(
        'kbe_modbus_polls_total{device="meter-1",result="ok"} 9\n'
        'kbe_modbus_polls_total{device="meter-1",result="failed"} 1\n'
    )
    state.health = {
        "buffer": {"depth": 17},
        "sync": {"connected": True, "in_flight": 2, "acked_readings": 40},
    }
    text = _table_text(state, T)
    meter = next(line for line in text.splitlines() if "meter-1" in line)
    assert "voltage 230.25 V, current 7.5 A" in meter
    assert "90 %" in meter  # 9 of 10 polls
    assert "3 s" in meter
    climate = next(line for line in text.splitlines() if "climate" in line)
    assert "50 %" in climate  # one good reading of two
    for name in ("soil", "incomer", "water", "pm", "gps", "cabinet-io"):
        assert name in text
    assert "buffer 17 readings waiting; uplink connected, 2 batches in flight, 40 acknowledged" in text
    state.health = {"buffer": {"depth": 900}, "sync": {"connected": False, "last_error": "refused"}}
    assert "uplink DISCONNECTED (refused)" in _table_text(state, T)


def test_poll_counters_are_read_from_the_metrics_text() -> None:
    text = 'x 1\nkbe_modbus_polls_total{device="a",line="l",result="ok"} 5\nkbe_modbus_polls_total{result="failed",device="a"} 2\n'
    assert modbus_polls(text) == {"a": (5.0, 2.0)}


def test_watchdog_keeps_the_groups_still_registered() -> None:
    import io

    assert watch(io.StringIO("add 100\nadd 200\ndel 100\nadd 1\nbogus\nadd x\n"), 1.0) == {200}


def _start_demo(work: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        agent_argv("demo", "--workdir", str(work), *extra),
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _centre_rows(work: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{work / 'centre.db'}?mode=ro", uri=True, timeout=2) as db:
            return int(db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    except sqlite3.Error:
        return 0


def _wait_children(work: Path, n: int, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(_processes_mentioning(str(work))) < n:
        time.sleep(0.2)
    assert len(_processes_mentioning(str(work))) >= n, _processes_mentioning(str(work))


@pytest.mark.timeout(90)
def test_killing_the_demo_leaves_nothing_running(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    demo = _start_demo(work, "--lines")
    try:
        _wait_children(work, 3)  # the watchdog, the receiver and the agent (whose argv name the work dir)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and _centre_rows(work) < 5:  # readings flow
            time.sleep(0.5)
        time.sleep(1.5)  # and the demo has printed them
        demo.send_signal(signal.SIGKILL)  # no clean-up of its own: only the watchdog is left to do it
        out, _ = demo.communicate(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _processes_mentioning(str(work)):
            time.sleep(0.2)
        assert _processes_mentioning(str(work)) == []
        assert "#" in out  # it was showing readings (--lines) before it was killed
    finally:
        if demo.poll() is None:
            demo.kill()


@pytest.mark.timeout(90)
def test_ctrl_c_stops_everything_before_the_prompt_returns(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    demo = _start_demo(work)
    try:
        _wait_children(work, 3)
        time.sleep(4.0)
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=40)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, out[-3000:]
    assert _processes_mentioning(str(work)) == []  # checked the moment it exited: cleanup came first
    assert "stopped; everything the demo started is stopped too" in out
    assert "meter-1" in out
    assert "eastron-sdm120" in out  # the table's kind column
