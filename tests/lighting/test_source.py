"""The lighting device kind inside the agent runtime: it starts from the site config, keeps switching
while the store and uplink are stalled (no network in its path), and after a restart computes its
state from the schedule and the persisted overrides."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.config import SiteConfig, parse_config
from control.lighting.kind import LightingSource, ReadingBuffer
from drivers.gpio.factory import PinFactories
from kernel.clock import Clock
from kernel.commands import CommandRouter, IncomingCommand
from kernel.kinds import KindRegistry
from kernel.readings import ClockQuality, Priority, Reading
from kernel.services import Services
from kernel.sink import ListSink
from kernel.source import RunContext
from tests.lighting.conftest import duty, lighting_dict, local_ts, relay

NIGHT = local_ts(2026, 3, 10, 23, 0)
DAY = local_ts(2026, 3, 11, 13, 0)


class FakeClock(Clock):
    """A wall clock the test sets."""

    def __init__(self, now: float) -> None:
        super().__init__(override=ClockQuality.SYNCED)
        self.t = now

    def now(self) -> float:
        return self.t


class StalledSink:
    """A sink whose put never returns (store full, disk stalled)."""

    def __init__(self) -> None:
        self.calls = 0

    async def put(self, readings) -> None:
        self.calls += 1
        await asyncio.Event().wait()


def site(tmp_path: Path) -> SiteConfig:
    return parse_config(
        {
            "site": {"id": "bn-01", "name": "Bắc Ninh", "location": {"lat": 21.19, "lon": 106.08}},
            "devices": [{"driver": "lighting", "name": "street"}],
            "sync": None,
            "lighting": lighting_dict(
                state_path=str(tmp_path / "lighting.json"), tick_s=0.05, meter_period_s=0.5
            ),
        }
    )


def sources(cfg: SiteConfig, ctx: RunContext) -> list[LightingSource]:
    built = KindRegistry().get("lighting").build_sources([d for d in cfg.devices if d.driver == "lighting"], ctx)
    assert len(built) == 1
    assert isinstance(built[0], LightingSource)
    return built


async def until(cond, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def test_switches_while_sink_stalls_and_commands_apply_at_once(pins, tmp_path):
    cfg = site(tmp_path)
    clock = FakeClock(DAY)
    sink = StalledSink()
    ctx = RunContext(cfg, sink, clock=clock, services=Services(PinFactories(pins)))
    (src,) = sources(cfg, ctx)

    async def main():
        task = asyncio.create_task(src.run(ctx))
        await until(
            lambda: src.controller is not None and src.controller.circuits["c1"].commanded is not None
        )
        assert not relay(pins, 17)
        await until(lambda: sink.calls >= 1)  # the reporter is now stuck in put() for good
        clock.t = NIGHT
        await until(lambda: relay(pins, 17) and duty(pins, 18) == 70)
        router = CommandRouter("bn-01", clock=clock)
        router.register("lighting", src)
        body = {"action": "override", "circuit": "c1", "level": 100, "duration_s": 60}
        out = router.dispatch(IncomingCommand("cmd-1", "bn-01", "lighting", NIGHT - 5, NIGHT + 300, body))
        assert out.outcome == "accepted"
        bad = dict(body, level=101)
        out = router.dispatch(IncomingCommand("cmd-2", "bn-01", "lighting", NIGHT - 5, NIGHT + 300, bad))
        assert out.outcome == "refused"
        assert out.reason.startswith("level: 101 is not valid")
        await until(lambda: duty(pins, 18) == 100, timeout=2.0)
        clock.t = NIGHT + 61
        await until(lambda: duty(pins, 18) == 70)
        assert len(src.buffer.items) <= src.buffer.maxlen
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        router.close()

    asyncio.run(main())


def test_restart_recomputes_from_schedule_and_keeps_override(pins, tmp_path):
    cfg = site(tmp_path)
    clock = FakeClock(NIGHT)
    sink = ListSink()

    async def run_once(check) -> None:
        ctx = RunContext(cfg, sink, clock=clock, services=Services(PinFactories(pins)))
        (src,) = sources(cfg, ctx)
        task = asyncio.create_task(src.run(ctx))
        await until(lambda: src.controller is not None)
        await check(src)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def first(src):
        await until(lambda: duty(pins, 18) == 70)
        assert (
            src.apply_command({"action": "override", "circuit": "c2", "level": 0, "duration_s": 3600}).outcome
            == "accepted"
        )
        await until(lambda: not relay(pins, 22))

    async def after_reboot(src):
        await until(lambda: src.controller.circuits["c1"].commanded is not None)
        assert relay(pins, 17)
        assert duty(pins, 18) == 70
        assert not relay(pins, 22)  # the override came back from the state file

    async def next_day(src):
        await until(lambda: src.controller.circuits["c1"].commanded is not None)
        assert not relay(pins, 17)
        assert not relay(pins, 22)

    async def main():
        await run_once(first)
        clock.t = NIGHT + 300
        await run_once(after_reboot)
        clock.t = DAY
        await run_once(next_day)

    asyncio.run(main())
    events = [r for r in sink.readings if r.point == "c1.on" and r.priority == Priority.EVENT]
    assert events, "state changes are reported as events"


def test_reading_buffer_drops_telemetry_before_alarms():
    buf = ReadingBuffer(3)
    alarm = Reading("d", "c1.lamp_failure", 1, 0.0, priority=Priority.ALARM)
    buf.extend([alarm] + [Reading("d", "c1.power", float(i), float(i)) for i in range(5)])
    assert len(buf.items) == 3
    assert buf.dropped == 3
    assert buf.items[0] == alarm
    assert [r.value for r in buf.take()] == [1, 3.0, 4.0]
    assert not buf.ready.is_set()


def test_own_pins_use_the_configured_pin_factory(tmp_path, monkeypatch):
    """No pin factory given to the run: the device's pin_factory (here via KBE_GPIO_PIN_FACTORY)
    picks one, as for the gpio kind."""
    from gpiozero.pins.mock import MockFactory

    monkeypatch.setenv("KBE_GPIO_PIN_FACTORY", "mock")
    cfg = site(tmp_path)
    ctx = RunContext(cfg, ListSink(), clock=FakeClock(NIGHT))
    (src,) = sources(cfg, ctx)

    async def main():
        task = asyncio.create_task(src.run(ctx))
        await until(
            lambda: src.controller is not None and src.controller.circuits["c1"].commanded is not None
        )
        assert isinstance(src.pin_factory, MockFactory)
        assert src.pin_factory.pin(17).state
        assert round(src.pin_factory.pin(18).state * 100) == 70
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
