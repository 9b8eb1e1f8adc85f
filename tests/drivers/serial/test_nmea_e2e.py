"""The NMEA GPS driver against its emulator over a pseudo-terminal: position, fix, time source."""

from __future__ import annotations

import asyncio

import pytest

from drivers.nmea.driver import Config, NmeaSource
from drivers.nmea.emulator import NmeaEmulator
from kernel.clock import Clock
from kernel.readings import ClockQuality, Priority
from tests.drivers.serial.helpers import make_ctx, points, run_source, wait_for


def config(path: str, **extra) -> Config:
    base = {"driver": "nmea_gps", "name": "gps", "line": {"type": "pty", "path": path}, "period_s": 1.0}
    return Config.model_validate(base | extra)


@pytest.fixture
def emulator():
    emu = NmeaEmulator(lat=21.1861, lon=106.0763, interval_s=0.25, seed=1)
    emu.start()
    yield emu
    emu.stop()


class NoSyncClock(Clock):
    """A clock that starts unsynchronised and never asks the kernel (as a Pi without NTP)."""

    def __init__(self) -> None:
        super().__init__(recheck_s=1e9)
        self._checked_at = 1e18


def test_position_and_clock_sync(emulator):
    clock = NoSyncClock()
    assert clock.quality() == ClockQuality.UNSYNCED
    ctx = make_ctx(clock)
    src = NmeaSource(config(emulator.path))

    async def body():
        await wait_for(ctx, lambda rs: any(r.point == "lat" for r in rs), 10)

    asyncio.run(run_source(src, ctx, body))
    lat, lon = points(ctx, "lat")[-1], points(ctx, "lon")[-1]
    assert lat.value == pytest.approx(21.1861, abs=1e-5)
    assert lon.value == pytest.approx(106.0763, abs=1e-5)
    assert points(ctx, "altitude")[-1].value == pytest.approx(12.0)
    assert points(ctx, "satellites")[-1].value == 9
    assert abs(points(ctx, "clock_offset")[-1].value) < 1.0
    assert clock.quality() == ClockQuality.SYNCED
    assert lat.clock == ClockQuality.SYNCED
    fix = points(ctx, "fix")
    assert [r.value for r in fix] == [True]
    assert fix[0].priority == Priority.EVENT


def test_far_clock_is_not_marked_synced_and_fix_loss_is_an_event(emulator):
    emulator.time_offset_s = 3600.0  # the board's clock is an hour behind GPS
    clock = NoSyncClock()
    ctx = make_ctx(clock)
    src = NmeaSource(config(emulator.path))

    async def body():
        await wait_for(ctx, lambda rs: any(r.point == "clock_offset" for r in rs), 10)
        emulator.fix = False
        await wait_for(ctx, lambda rs: [r.value for r in rs if r.point == "fix"][-1:] == [False], 10)
        await wait_for(ctx, lambda rs: [r.value for r in rs if r.point == "fix_quality"][-1:] == [0], 10)

    asyncio.run(run_source(src, ctx, body))
    assert points(ctx, "clock_offset")[0].value == pytest.approx(3600.0, abs=1.5)
    assert clock.quality() == ClockQuality.UNSYNCED
    assert [r.value for r in points(ctx, "fix")] == [True, False]


def test_bad_sentences_counted_good_ones_still_used(emulator):
    emulator.faults.set(garbage=0.5, bad_checksum=0.5, truncate=0.3)
    ctx = make_ctx()
    src = NmeaSource(config(emulator.path))

    async def body():
        await wait_for(ctx, lambda rs: sum(r.point == "lat" for r in rs) >= 2, 15)

    asyncio.run(run_source(src, ctx, body))
    assert all(r.value == pytest.approx(21.1861, abs=1e-5) for r in points(ctx, "lat"))
    assert ctx.metrics.total("kbe_serial_bad_frames_total") >= 1
    assert ctx.metrics.get("kbe_serial_frames_total", {"device": "gps"}) >= 2
