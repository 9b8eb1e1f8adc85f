"""A Modbus lighting controller's watchdog: the agent's control step writes a heartbeat; when the
agent goes silent by day with the lamps off, the controller runs its own default schedule (here:
on), so a dead agent cannot leave a street dark all night; when the agent comes back it takes over.

Real parts: the lighting kind as the agent builds it, over the shared Modbus link, against the
emulated controller served on Modbus TCP (drivers/modbus TcpServer) in this process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from agent.config import parse_config
from control.lighting.emulator import DefaultSchedule, LightingControllerEmulator
from control.lighting.outputs import OutputState
from kernel.sink import ListSink
from kernel.source import RunContext
from tests.conftest import free_port
from tests.lighting.conftest import lighting_dict
from tests.lighting.test_source import DAY, FakeClock, sources, until

# The controller's own timer says "on" all day long, so its fallback is visible at DAY.
ALWAYS_ON = DefaultSchedule(on=dt.time(0, 0), off=dt.time(23, 59, 59), level=100)


def test_silent_agent_hands_the_lamps_to_the_controller_schedule(tmp_path: Path) -> None:
    port = free_port()
    emu = LightingControllerEmulator(
        initial=OutputState(True, 100), heartbeat_register=7, watchdog_s=1.0, schedule=ALWAYS_ON
    )
    lighting = lighting_dict(state_path=str(tmp_path / "lighting.json"), tick_s=0.1)
    lighting["circuits"] = [
        {
            "name": "m1",
            "group": "route-1",
            "lamps": 10,
            "lamp_watts": 100,
            "output": {
                "type": "modbus",
                "host": "127.0.0.1",
                "port": port,
                "relay_coil": 0,
                "dim_register": 1,
                "heartbeat_register": 7,
                "timeout_s": 1,
            },
        }
    ]
    cfg = parse_config(
        {
            "site": {"id": "bn-01", "name": "Bắc Ninh", "location": {"lat": 21.19, "lon": 106.08}},
            "devices": [{"driver": "lighting", "name": "street"}],
            "lighting": lighting,
        }
    )

    async def main() -> None:
        await emu.start("127.0.0.1", port)
        ctx = RunContext(cfg, ListSink(), clock=FakeClock(DAY))
        try:
            (src,) = sources(cfg, ctx)
            task = asyncio.create_task(src.run(ctx))
            await until(lambda: emu.state() == OutputState(False, 0))  # by day the agent switches off
            beats = emu.heartbeats
            await asyncio.sleep(2.0)  # two watchdog periods with the agent alive: no fallback
            assert emu.heartbeats >= beats + 5
            assert emu.fallbacks == 0
            assert emu.state() == OutputState(False, 0)

            task.cancel()  # the agent goes silent
            await asyncio.gather(task, return_exceptions=True)
            await until(lambda: emu.state() == OutputState(True, 100), timeout=5.0)
            assert emu.fallbacks == 1

            (src,) = sources(cfg, ctx)  # the agent is back: its heartbeat ends the fallback
            task = asyncio.create_task(src.run(ctx))
            await until(lambda: emu.state() == OutputState(False, 0) and not emu.on_schedule)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            await emu.stop()

    asyncio.run(main())


def test_default_schedule_wraps_midnight() -> None:
    night = DefaultSchedule()  # 18:00 to 06:00, Asia/Ho_Chi_Minh
    at = lambda h: dt.datetime(2026, 3, 10, h, 0, tzinfo=dt.timezone(dt.timedelta(hours=7))).timestamp()  # noqa: E731
    assert night.state(at(23)) == OutputState(True, 100)
    assert night.state(at(3)) == OutputState(True, 100)
    assert night.state(at(12)) == OutputState(False, 0)
    assert night.state(at(18)) == OutputState(True, 100)
    assert night.state(at(6)) == OutputState(False, 0)
