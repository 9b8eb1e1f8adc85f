"""agent/app.py's pace loop: the agent's wait for a core (kernel/cpuwait.py, found in the run
context's services) reaches the pace, which stretches a growing backlog only while it is high."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import agent.app as app
import kernel.pace as pace
from agent.app import Agent
from agent.config import parse_config
from kernel.cpuwait import RunQueueWait
from kernel.services import Services


class _Wait(RunQueueWait):
    """Says the threads waited ``share`` seconds per second for a core."""

    def __init__(self, share: float) -> None:
        super().__init__()
        self.value = share
        self.looks = 0

    def share(self) -> float | None:
        self.looks += 1
        return self.value


class _Growing:
    """64,000 readings/s accepted, 59,000/s acknowledged, from 300,000 waiting (5 s of deliveries)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def committed(self) -> int:
        return int(64_000 * (time.monotonic() - self.t0))

    def depth(self) -> int:
        return 300_000 + int(5_000 * (time.monotonic() - self.t0))


async def _stretch_after(tmp_path: Path, wait: float, monkeypatch: pytest.MonkeyPatch) -> tuple[float, int]:
    monkeypatch.setattr(app, "PACE_EVERY_S", 0.1)
    monkeypatch.setattr(app, "PACE_TICK_S", 0.02)
    # Only the wait for a core may say starved here: a loaded test machine runs timers late too.
    monkeypatch.setattr(pace, "STARVED_LAG_S", 60.0)
    cfg = parse_config(
        {
            "site": {"id": "bn-pace-01", "name": "Pace", "location": {"lat": 21.19, "lon": 106.08}},
            "devices": [{"driver": "system", "name": "board", "period_s": 1}],
            "store": {"path": str(tmp_path / "store.db")},
        }
    )
    services = Services()
    meter = _Wait(wait)
    services.provide(meter, as_type=RunQueueWait)
    agent = Agent(cfg, services=services)
    growing = _Growing()
    monkeypatch.setattr(agent, "writer", growing)
    monkeypatch.setattr(agent.store, "depth", growing.depth)
    agent.uploader = SimpleNamespace(connected=True)  # type: ignore[assignment]
    task = asyncio.create_task(agent._pace_loop())
    await asyncio.sleep(1.0)  # about 10 steps
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stretch = agent.ctx.pace.stretch
    agent.store.close()
    return stretch, meter.looks


async def test_threads_waiting_for_a_core_stretch_the_polls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stretch, looks = await _stretch_after(tmp_path, 1.2, monkeypatch)
    assert looks >= 5  # one look to set the mark, then one per step
    assert stretch > 1.5


async def test_a_growing_backlog_with_cpu_to_spare_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stretch, _ = await _stretch_after(tmp_path, 0.1, monkeypatch)
    assert stretch == 1.0
