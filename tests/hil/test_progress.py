"""The progress line: redrawn in place on a terminal, one line a minute without one; live checks."""

from __future__ import annotations

import io

from hil.expect import failing_so_far
from hil.rig import parse_rig
from hil.schedule import plan
from kernel.progress import Progress, Snapshot, status_line

SNAP = Snapshot(70.0, 300.0, ("dead(th)", "broker_down"), 812, ("recovery[th]",), "run")


def test_status_line_names_time_left_faults_stored_and_failures() -> None:
    line = status_line("hil air", SNAP)
    assert "01:10 / 05:00 (03:50 left)" in line
    assert "faults: dead(th), broker_down" in line
    assert "stored 812" in line
    assert "failing: recovery[th]" in line
    assert "failing: none" in status_line("x", Snapshot(1.0, failing=[]))
    assert "failing" not in status_line("bench", Snapshot(1.0))  # a command that checks nothing
    assert "faults" not in status_line("suite", Snapshot(1.0, done=3, steps=9))
    many = status_line("x", Snapshot(1.0, failing=[f"r[{i}]" for i in range(7)]))
    assert "+3" in many


def test_a_terminal_is_redrawn_in_place() -> None:
    out = io.StringIO()
    p = Progress("hil", stream=out, tty=True)
    for t in range(5):
        p.update(Snapshot(float(t), 10.0))
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 6
    assert "\n" not in text


def test_without_a_terminal_one_line_a_minute() -> None:
    now = [0.0]
    out = io.StringIO()
    p = Progress("hil", stream=out, tty=False, clock=lambda: now[0])
    for t in range(301):  # five minutes of updates once a second
        now[0] = float(t)
        p.update(Snapshot(float(t), 300.0))
    assert p.lines == 6  # at 0, 60, 120, 180, 240, 300 s
    p.close(Snapshot(300.0, 300.0, phase="done"))
    assert p.lines == 7
    assert "\r" not in out.getvalue()


RIG = {
    "rig": "x",
    "duration_s": 120,
    "lines": [{"name": "bus", "type": "rtu"}],
    "devices": [
        {"kind": "modbus", "name": "th", "profile": "xy-md02", "line": "bus", "unit": 1},
        {"kind": "serial", "name": "pm", "sensor": "pms5003"},
    ],
    "faults": [{"kind": "dead", "device": "th", "at_s": 10, "until_s": 20}],
    "expect": {"recovery_s": 10},
}


def test_live_checks_flag_a_device_not_back_after_its_fault() -> None:
    rig = parse_rig(RIG)
    _, windows = plan(rig)
    t0 = 1000.0
    windows[0].start_wall, windows[0].end_wall = t0 + 10, t0 + 20
    # 25 s in: th's fault ended 5 s ago, within its allowance: nothing failing yet.
    assert failing_so_far(rig, windows, {"th": t0 + 9, "pm": t0 + 24}, t0, t0 + 25) == []
    # 35 s in: still nothing from th since the fault ended.
    assert failing_so_far(rig, windows, {"th": t0 + 9, "pm": t0 + 34}, t0, t0 + 35) == ["recovery[th]"]
    assert failing_so_far(rig, windows, {"th": t0 + 21, "pm": t0 + 34}, t0, t0 + 35) == []
    # A device that never said anything is flagged once its allowance is over.
    assert failing_so_far(rig, windows, {"th": t0 + 21}, t0, t0 + 35) == ["reported[pm]"]
