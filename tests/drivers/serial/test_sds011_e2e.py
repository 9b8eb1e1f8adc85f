"""The SDS011 driver against its emulator over a pseudo-terminal."""

from __future__ import annotations

import asyncio

import pytest

from drivers.sds011.driver import Config, Sds011Source
from drivers.sds011.emulator import Sds011Emulator
from tests.drivers.serial.helpers import make_ctx, points, run_source, wait_for


def config(path: str, **extra) -> Config:
    base = {"driver": "sds011", "name": "dust", "line": {"type": "pty", "path": path}, "period_s": 1.0}
    return Config.model_validate(base | extra)


@pytest.fixture
def emulator():
    emu = Sds011Emulator(pm2_5=25.0, pm10=40.0, interval_s=0.2, seed=3)
    emu.start()
    yield emu
    emu.stop()


def test_active_mode_with_faults(emulator):
    ctx = make_ctx()
    src = Sds011Source(config(emulator.path))

    async def body():
        await wait_for(ctx, lambda rs: sum(r.point == "pm2_5" for r in rs) >= 1, 10)
        emulator.faults.set(garbage=0.4, bad_checksum=0.3, truncate=0.2)
        await wait_for(ctx, lambda rs: sum(r.point == "pm2_5" for r in rs) >= 3, 10)

    asyncio.run(run_source(src, ctx, body))
    assert all(24.0 <= r.value <= 26.0 for r in points(ctx, "pm2_5"))
    assert all(38.0 <= r.value <= 42.0 for r in points(ctx, "pm10"))
    assert src.sensor_id == 0xA160
    assert ctx.metrics.total("kbe_serial_bad_frames_total") >= 1
    assert emulator.stats.bad_checksum + emulator.stats.truncated >= 1


def test_query_mode_and_sleep(emulator):
    ctx = make_ctx()
    src = Sds011Source(
        config(emulator.path, mode="query", sleep_between=True, warmup_s=0.1, device_id=0xA160)
    )

    async def body():
        await wait_for(ctx, lambda rs: sum(r.point == "pm2_5" for r in rs) >= 2, 10)

    asyncio.run(run_source(src, ctx, body))
    assert emulator.query_mode
    assert emulator.asleep
    assert emulator.stats.frames == 0  # nothing streamed once in query mode
    assert all(r.meta == {"frames": "1"} for r in points(ctx, "pm2_5"))


def test_other_sensor_id_is_ignored(emulator):
    ctx = make_ctx()
    src = Sds011Source(config(emulator.path, mode="query", device_id=0x1234, silence_s=1.0))

    async def body():
        await asyncio.sleep(2.5)

    asyncio.run(run_source(src, ctx, body))
    assert not emulator.query_mode  # the command was for another sensor
    assert not points(ctx, "pm2_5")  # and the frames it streams carry another id: not ours
    assert ctx.metrics.get("kbe_serial_foreign_frames_total", {"device": "dust"}) >= 3
