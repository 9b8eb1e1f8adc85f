"""The fault scheduler runs actions in order, on time, and records what really happened."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hil.rig import parse_rig
from hil.schedule import FaultScheduler, plan

RIG = {
    "rig": "s",
    "duration_s": 1.0,
    "lines": [{"name": "bus", "type": "rtu"}],
    "devices": [{"kind": "modbus", "name": "d", "profile": "xy-md02", "line": "bus", "unit": 1}],
    "faults": [
        {"kind": "dead", "device": "d", "at_s": 0.2, "until_s": 0.5},
        {"kind": "agent_kill", "at_s": 0.3, "down_s": 0.1},
        {"kind": "reboot", "device": "d", "at_s": 0.5, "down_s": 0},
    ],
}


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.log: list[tuple[float, str, str]] = []
        self.t0 = time.monotonic()
        self.fail_on = fail_on

    async def start(self, fault: Any) -> None:
        self.log.append((time.monotonic() - self.t0, "start", fault.kind))
        if fault.kind == self.fail_on:
            raise RuntimeError("emulator gone")

    async def end(self, fault: Any) -> None:
        self.log.append((time.monotonic() - self.t0, "end", fault.kind))


def test_plan_orders_ends_before_starts_at_the_same_moment() -> None:
    actions, windows = plan(parse_rig(RIG))
    steps = [(a.at_s, a.phase, a.index) for a in actions]
    assert steps == [
        (0.2, "start", 0),
        (0.3, "start", 1),
        (0.4, "end", 1),
        (0.5, "end", 0),
        (0.5, "end", 2),
        (0.5, "start", 2),
    ]
    assert [w.label for w in windows] == [
        "dead(d) at 0.2-0.5 s",
        "agent_kill at 0.3-0.4 s",
        "reboot(d) at 0.5 s",
    ]


def test_scheduler_runs_on_time_and_records_walls() -> None:
    rig = parse_rig(RIG)
    rec = Recorder()
    sched = FaultScheduler(rig, rec)
    asyncio.run(sched.run(rec.t0))
    assert [(p, k) for _, p, k in rec.log] == [
        ("start", "dead"),
        ("start", "agent_kill"),
        ("end", "agent_kill"),
        ("end", "dead"),
        ("end", "reboot"),
        ("start", "reboot"),
    ]
    for (t, _, _), want in zip(rec.log, [0.2, 0.3, 0.4, 0.5, 0.5, 0.5], strict=False):
        assert want - 0.01 <= t <= want + 0.5
    dead = sched.windows[0]
    assert dead.start_wall is not None
    assert dead.end_wall is not None
    assert 0.2 <= dead.end_wall - dead.start_wall <= 0.8


def test_failed_injection_is_recorded_and_the_run_goes_on() -> None:
    rig = parse_rig(RIG)
    rec = Recorder(fail_on="agent_kill")
    sched = FaultScheduler(rig, rec)
    asyncio.run(sched.run(rec.t0))
    assert sched.windows[1].error == "start failed: emulator gone"
    assert len(rec.log) == 6


def test_finish_ends_faults_still_running() -> None:
    rig = parse_rig(RIG)
    rec = Recorder()
    sched = FaultScheduler(rig, rec)

    async def go() -> None:
        task = asyncio.create_task(sched.run(rec.t0))
        await asyncio.sleep(0.35)
        task.cancel()
        await sched.finish()

    asyncio.run(go())
    assert ("end", "dead") in [(p, k) for _, p, k in rec.log]
    assert all(w.end_wall is not None for w in sched.windows if w.start_wall is not None)
