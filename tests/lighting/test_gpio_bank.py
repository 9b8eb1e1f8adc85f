"""Lighting on the shared GPIO driver (drivers/gpio): circuits switched and dimmed through a ``gpio``
device's relay and PWM outputs, a photocell read from its input, and references checked in the config."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from agent.config import parse_config
from control.lighting.astro import AstroClock
from control.lighting.controller import LightingController
from control.lighting.kind import build_outputs
from control.lighting.photocell import BankPhotocell
from control.lighting.state import LightingState
from drivers.gpio.driver import Config as GpioDeviceConfig
from drivers.gpio.driver import build_sources as gpio_sources
from drivers.gpio.registry import GpioBanks
from kernel.errors import ConfigError
from kernel.readings import Priority
from kernel.sink import ListSink
from kernel.source import RunContext
from tests.lighting.conftest import BAC_NINH, lighting_dict, local_ts

NIGHT = local_ts(2026, 3, 10, 23, 0)
DAY = local_ts(2026, 3, 11, 13, 0)
SITE = {"id": "bn-01", "name": "Bắc Ninh", "location": {"lat": 21.19, "lon": 106.08}}
GPIO = {
    "driver": "gpio",
    "name": "cabinet",
    "pin_factory": "mock",
    "outputs": [
        {"name": "contactor-1", "pin": 17, "kind": "relay", "initial": 1},
        {"name": "dim-1", "pin": 18, "kind": "pwm", "initial": 1.0},
        {"name": "fan", "pin": 24, "kind": "relay"},
    ],
    "inputs": [{"name": "cell", "pin": 27, "kind": "photocell"}, {"name": "door", "pin": 22, "kind": "door"}],
}


def site(**lighting_extra):
    d = lighting_dict(**lighting_extra)
    d["circuits"] = [
        {
            "name": "c1",
            "group": "route-1",
            "lamps": 10,
            "lamp_watts": 100,
            "output": {"type": "gpio_bank", "device": "cabinet", "relay": "contactor-1", "dim": "dim-1"},
        },
    ]
    d["photocell"] = {
        "type": "gpio_bank",
        "device": "cabinet",
        "input": "cell",
        "window_min": 30,
        "debounce_s": 0,
    }
    return {"site": SITE, "devices": [GPIO, {"driver": "lighting", "name": "street"}], "lighting": d}


def test_bank_references_are_checked():
    parse_config(site())
    cases = [
        (
            ("circuits", 0, "output", "device", "cabinet2"),
            "lighting.circuits[0].output.device: 'cabinet2' is not a gpio device of this site ['cabinet']",
        ),
        (
            ("circuits", 0, "output", "dim", "fan"),
            "lighting.circuits[0].output.dim: cabinet.fan is a relay output, not pwm",
        ),
        (
            ("circuits", 0, "output", "relay", "nope"),
            "lighting.circuits[0].output.relay: 'nope' is not one of cabinet's outputs",
        ),
        (
            ("photocell", None, None, "input", "door"),
            "lighting.photocell.input: cabinet.door is a door input, not photocell",
        ),
    ]
    for (where, i, sub, field, value), expected in cases:
        cfg = site()
        target = cfg["lighting"][where]
        target = target[i][sub] if i is not None else target
        target[field] = value
        with pytest.raises(ConfigError) as err:
            parse_config(cfg)
        assert err.value.problems[0].startswith(expected), err.value.problems


def test_controller_drives_the_gpio_bank():
    cfg = parse_config(site())
    assert cfg.lighting is not None
    ctx = RunContext(cfg, ListSink())
    gpio_cfgs = [GpioDeviceConfig.model_validate(GPIO)]
    assert len(gpio_sources(gpio_cfgs, ctx)) == 1  # registers the bank
    banks = GpioBanks.of(ctx)
    bank = banks.get("cabinet")
    try:
        assert cfg.lighting.photocell is not None
        astro = AstroClock(*BAC_NINH, "Asia/Ho_Chi_Minh", cfg.lighting.astro)
        ctl = LightingController(
            "street",
            cfg.lighting,
            astro,
            build_outputs(cfg.lighting, banks=banks),
            None,
            BankPhotocell(cfg.lighting.photocell, banks),
            LightingState(),
        )

        async def main():
            await ctl.step(DAY, 0.0)
            assert bank.read_back("contactor-1") == 0.0
            await ctl.step(NIGHT, 1.0)
            assert bank.read_back("contactor-1") == 1.0
            assert bank.read_back("dim-1") == pytest.approx(0.7)
            # The photocell on the bank's input: dark 20 min before sunset switches on early.
            sunset = ctl.schedule.astro.night(dt.date(2026, 3, 11)).on.timestamp()
            await ctl.step(sunset - 20 * 60, 2.0)
            assert bank.read_back("contactor-1") == 0.0
            bank.factory.pin(27).drive_low()  # pull-up input: contact closed = active = dark
            assert bank.input_state("cell")
            readings = await ctl.step(sunset - 19 * 60, 3.0)
            assert bank.read_back("contactor-1") == 1.0
            assert not [r for r in readings if r.priority == Priority.ALARM]

        asyncio.run(main())
    finally:
        banks.unregister("cabinet")


def test_missing_bank_is_an_output_fault_not_a_crash():
    cfg = parse_config(site())
    assert cfg.lighting is not None
    astro = AstroClock(*BAC_NINH, "Asia/Ho_Chi_Minh", cfg.lighting.astro)
    ctl = LightingController(
        "street", cfg.lighting, astro, build_outputs(cfg.lighting), state=LightingState()
    )
    readings = asyncio.run(ctl.step(NIGHT, 0.0))
    faults = [r for r in readings if r.point == "c1.output_fault"]
    assert faults
    assert faults[0].priority == Priority.ALARM
    assert "no gpio device 'cabinet'" in str(faults[0].value)
