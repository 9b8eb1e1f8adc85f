"""Outputs through a Modbus TCP lighting controller (the Modbus driver against its emulator): switching,
dimming, read-back, a manual change detected, and lamp failure judged by an SDM meter on the same load."""

from __future__ import annotations

import asyncio
import time

from control.lighting.astro import AstroClock
from control.lighting.config import LightingConfig, OutputConfig
from control.lighting.controller import LightingController
from control.lighting.emulator import LampBank, LightingControllerEmulator, SdmEmulator
from control.lighting.kind import build_meters, build_outputs
from control.lighting.outputs import ModbusLightingOutput, OutputState
from control.lighting.state import LightingState
from drivers.modbus.link import ModbusLink
from kernel.readings import Priority
from tests.conftest import free_port
from tests.lighting.conftest import BAC_NINH, lighting_dict, local_ts

NIGHT = local_ts(2026, 3, 10, 23, 0)
DAY = local_ts(2026, 3, 11, 13, 0)


def test_modbus_output_roundtrip():
    async def main():
        port = free_port()
        emu = LightingControllerEmulator(unit=2, relay_coil=4, dim_register=5)
        await emu.start("127.0.0.1", port)
        cfg = OutputConfig(type="modbus", host="127.0.0.1", port=port, unit=2, relay_coil=4, dim_register=5)
        out = ModbusLightingOutput(cfg, ModbusLink.tcp("127.0.0.1", port, 2, 1.0))
        try:
            await out.apply(True, 65)
            assert await out.read_back() == OutputState(True, 65)
            assert emu.state() == OutputState(True, 65)
            await out.apply(False, 0)
            assert emu.state() == OutputState(False, 0)
            assert emu.writes == 4
        finally:
            await out.close()
            await emu.stop()

    asyncio.run(main())


def test_controller_over_modbus_with_meter():
    async def main():
        ctl_port, meter_port = free_port(), free_port()
        emu = LightingControllerEmulator(initial=OutputState(True, 100))
        await emu.start("127.0.0.1", ctl_port)
        bank = LampBank(emu.state, lamps=8, lamp_watts=150)
        meter = SdmEmulator(bank, unit=1)
        await meter.start("127.0.0.1", meter_port)
        d = lighting_dict()
        d["circuits"] = [
            {
                "name": "m1",
                "group": "route-1",
                "lamps": 8,
                "lamp_watts": 150,
                "settle_s": 0,
                "output": {
                    "type": "modbus",
                    "host": "127.0.0.1",
                    "port": ctl_port,
                    "relay_coil": 0,
                    "dim_register": 1,
                },
                "meter": {"type": "sdm120", "host": "127.0.0.1", "port": meter_port},
            },
        ]
        cfg = LightingConfig.model_validate(d)
        astro = AstroClock(*BAC_NINH, "Asia/Ho_Chi_Minh", cfg.astro)
        ctl = LightingController(
            "street", cfg, astro, build_outputs(cfg), build_meters(cfg), None, LightingState()
        )
        try:
            await ctl.step(DAY, time.monotonic())
            assert emu.state() == OutputState(False, 0)
            await ctl.step(NIGHT, time.monotonic())
            assert emu.state() == OutputState(True, 70)
            readings = await ctl.sample_meters(NIGHT)
            assert not [r for r in readings if r.priority == Priority.ALARM]
            bank.failed = 3
            alarm = [r for r in await ctl.sample_meters(NIGHT + 30) if r.priority == Priority.ALARM]
            assert [r.point for r in alarm] == ["m1.lamp_failure"]
            assert alarm[0].value == 3
            # Someone switches the cabinet off by hand: the read-back shows it, the controller restores it.
            emu.force(OutputState(False, 0))
            fault = [r for r in await ctl.step(NIGHT + 60, time.monotonic()) if r.point == "m1.output_fault"]
            assert fault
            assert fault[0].priority == Priority.ALARM
            await ctl.step(NIGHT + 65, time.monotonic())
            assert emu.state() == OutputState(True, 70)
            # The controller goes away: an output fault alarm, and the loop carries on.
            await emu.stop()
            readings = await ctl.step(DAY + 86400, time.monotonic())
            assert [(r.meta or {}).get("alarm") for r in readings if r.priority == Priority.ALARM] == [
                "output_fault"
            ]
        finally:
            await ctl.close()
            await meter.stop()
            await emu.stop()

    asyncio.run(main())
