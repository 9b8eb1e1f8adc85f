"""Helpers for Modbus tests: a tiny profile, a runner that polls a bus for a while."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from drivers.modbus.bus import ModbusBus
from drivers.modbus.profile import Profile
from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.readings import ClockQuality
from kernel.sink import ListSink
from kernel.source import RunContext
from tests.conftest import until

__all__ = ["context", "make_profile", "running", "until"]

TEST_PROFILE = {
    "model": "TestMeter",
    "sources": ["tests"],
    "points": [
        {
            "name": "temp",
            "table": "input_register",
            "address": 0,
            "type": "int16",
            "scale": 0.1,
            "unit": "°C",
            "min": -40,
            "max": 80,
        },
        {
            "name": "energy",
            "table": "input_register",
            "address": 2,
            "type": "float32",
            "unit": "kWh",
            "min": 0,
        },
        {"name": "count", "table": "input_register", "address": 4, "type": "uint32", "unit": ""},
        {
            "name": "setpoint",
            "table": "holding_register",
            "address": 10,
            "type": "uint16",
            "writable": True,
            "min": 0,
            "max": 1000,
        },
        {"name": "limit", "table": "holding_register", "address": 11, "type": "float32", "writable": True},
        {
            "name": "serial",
            "table": "holding_register",
            "address": 20,
            "type": "string",
            "count": 4,
            "poll": "slow",
        },
        {"name": "relay", "table": "coil", "address": 0, "type": "bool", "writable": True},
        {"name": "alarm", "table": "discrete_input", "address": 3, "type": "bool"},
        {"name": "locked", "table": "holding_register", "address": 30, "type": "uint16"},
    ],
}


def make_profile() -> Profile:
    return Profile.model_validate(TEST_PROFILE)


def context(sink: ListSink | None = None) -> RunContext:
    return RunContext(
        site=None,  # type: ignore[arg-type]
        sink=sink or ListSink(),
        clock=Clock(override=ClockQuality.SYNCED),
        metrics=Metrics(),
        log=logging.getLogger("kbe.test"),
    )


@contextlib.asynccontextmanager
async def running(bus: ModbusBus, ctx: RunContext):
    task = asyncio.create_task(bus.run(ctx))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

