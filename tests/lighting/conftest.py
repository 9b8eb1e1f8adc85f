"""Fixtures for lighting tests: a Bắc Ninh site, mock GPIO pins, a controller on simulated time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from control.lighting.astro import AstroClock
from control.lighting.config import LightingConfig
from control.lighting.controller import LightingController
from control.lighting.kind import build_outputs
from control.lighting.photocell import GpioPhotocell
from control.lighting.state import LightingState

BAC_NINH = (21.19, 106.08)
TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def local_ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """UTC seconds of a local (Asia/Ho_Chi_Minh) time."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=TZ).timestamp()


def lighting_dict(**extra: Any) -> dict[str, Any]:
    """A valid lighting section: two circuits in two groups, a night profile and a Tết rule."""
    base: dict[str, Any] = {
        "profiles": [
            {
                "name": "standard",
                "steps": [
                    {"at": "22:00", "level": 70},
                    {"at": "00:00", "level": 50},
                    {"at": "04:30", "level": 80},
                ],
            },
            {"name": "festive", "start_level": 100},
            {"name": "economy", "start_level": 80, "steps": [{"at": "21:00", "level": 40}]},
        ],
        "groups": [{"name": "route-1", "profile": "standard"}, {"name": "park", "profile": "economy"}],
        "circuits": [
            {
                "name": "c1",
                "group": "route-1",
                "lamps": 12,
                "lamp_watts": 100,
                "settle_s": 0,
                "output": {"type": "gpio", "relay_pin": 17, "dim_pin": 18},
            },
            {
                "name": "c2",
                "group": "park",
                "lamps": 6,
                "lamp_watts": 60,
                "settle_s": 0,
                "output": {"type": "gpio", "relay_pin": 22, "dim_pin": 23},
            },
        ],
        "calendar": [
            {"name": "tet", "profile": "festive", "lunar_new_year": True, "day_offset": -1, "nights": 4}
        ],
    }
    base.update(extra)
    return base


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    """A mock pin factory whose pins support PWM (given to code explicitly, never set process-wide)."""
    factory = MockFactory(pin_class=MockPWMPin)
    try:
        yield factory
    finally:
        factory.reset()


def make_controller(
    cfg: LightingConfig,
    pins: MockFactory,
    state_path: Path | None = None,
    meters: dict[str, Any] | None = None,
) -> LightingController:
    """A controller on mock pins, with its state in ``state_path`` (None: not persisted)."""
    astro = AstroClock(BAC_NINH[0], BAC_NINH[1], "Asia/Ho_Chi_Minh", cfg.astro)
    sensor = GpioPhotocell(cfg.photocell, pins) if cfg.photocell is not None else None
    return LightingController(
        "street", cfg, astro, build_outputs(cfg, pins), meters, sensor, LightingState.load(state_path)
    )


def relay(pins: MockFactory, n: int) -> bool:
    """The mock relay pin's state."""
    return bool(pins.pin(n).state)


def duty(pins: MockFactory, n: int) -> int:
    """The mock PWM pin's duty cycle in percent."""
    return round(float(pins.pin(n).state) * 100)
