"""The PMS driver against its emulator over a pseudo-terminal: modes, commands, faults."""

from __future__ import annotations

import asyncio

import pytest

from drivers.pms.driver import Config, PmsSource
from drivers.pms.emulator import PmsEmulator
from kernel.readings import Priority
from tests.drivers.serial.helpers import make_ctx, points, run_source, wait_for


def config(path: str, **extra) -> Config:
    return Config.model_validate(
        {
            "driver": "pms",
            "name": "pm1",
            "line": {"type": "pty", "path": path},
            "period_s": 1.0,
            "silence_s": 1.5,
        }
        | extra
    )


@pytest.fixture
def emulator():
    emu = PmsEmulator(model="PMS7003", pm2_5=42.0, fast=True, seed=7)
    emu.start()
    yield emu
    emu.stop()


def test_active_mode_means_and_faults_counted(emulator):
    ctx = make_ctx()
    src = PmsSource(config(emulator.path))

    async def body():
        await wait_for(ctx, lambda rs: len([r for r in rs if r.point == "pm2_5"]) >= 1, 10)
        emulator.faults.set(garbage=0.5, bad_checksum=0.3, truncate=0.3)
        await wait_for(ctx, lambda rs: len([r for r in rs if r.point == "pm2_5"]) >= 4, 15)

    asyncio.run(run_source(src, ctx, body))
    pm25 = points(ctx, "pm2_5")
    assert all(38 <= r.value <= 46 for r in pm25), [r.value for r in pm25]
    assert points(ctx, "pm10")[0].unit == "ug/m3"
    assert points(ctx, "n0_3")[0].value > 0
    assert points(ctx, "online")[0].value is True
    m = ctx.metrics
    assert m.get("kbe_serial_frames_total", {"device": "pm1"}) >= 4
    bad = m.total("kbe_serial_bad_frames_total") + m.get("kbe_serial_garbage_bytes_total", {"device": "pm1"})
    assert bad > 0
    # Every frame the emulator broke was thrown away, none was stored: values stay in range (above).
    assert emulator.stats.bad_checksum + emulator.stats.truncated > 0


def test_passive_mode_reads_on_request_and_sleeps_between(emulator):
    ctx = make_ctx()
    src = PmsSource(config(emulator.path, mode="passive", sleep_between=True, warmup_s=0.2, period_s=1.0))

    async def body():
        await wait_for(ctx, lambda rs: len([r for r in rs if r.point == "pm2_5"]) >= 2, 10)
        for _ in range(100):  # the sleep command follows the reading it came after: give it 5 s
            if emulator.asleep:
                break
            await asyncio.sleep(0.05)

    asyncio.run(run_source(src, ctx, body))
    assert emulator.passive
    assert emulator.stats.frames == 0  # nothing streamed unasked
    assert emulator.stats.replies >= 3  # mode ack + read answers + sleep acks
    assert emulator.asleep  # put back to sleep after each read
    assert all(r.meta == {"frames": "1"} for r in points(ctx, "pm2_5"))


def test_silence_reported_offline_then_back(emulator):
    ctx = make_ctx()
    src = PmsSource(config(emulator.path))

    async def body():
        await wait_for(ctx, lambda rs: any(r.point == "online" and r.value is True for r in rs), 10)
        emulator.faults.set(silence=True)
        await wait_for(ctx, lambda rs: any(r.point == "online" and r.value is False for r in rs), 10)
        emulator.faults.clear()
        await wait_for(ctx, lambda rs: [r.value for r in rs if r.point == "online"][-1] is True, 10)

    asyncio.run(run_source(src, ctx, body))
    online = points(ctx, "online")
    assert [r.value for r in online] == [True, False, True]
    assert all(r.priority == Priority.EVENT for r in online)


def test_sensor_found_asleep_is_woken_again(emulator):
    ctx = make_ctx()
    src = PmsSource(config(emulator.path, silence_s=0.5))

    async def body():
        await wait_for(ctx, lambda rs: any(r.point == "online" and r.value is True for r in rs), 10)
        emulator.asleep = True  # a brown-out left it asleep (or someone pulled SET low and back)
        await wait_for(ctx, lambda rs: any(r.point == "online" and r.value is False for r in rs), 10)
        await wait_for(ctx, lambda rs: [r.value for r in rs if r.point == "online"][-1] is True, 10)

    asyncio.run(run_source(src, ctx, body))
    assert not emulator.asleep
    assert ctx.metrics.get("kbe_serial_reinit_total", {"device": "pm1"}) >= 1
