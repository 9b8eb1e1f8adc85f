"""A lux sensor on Modbus (the shared driver against its emulator) as the sensor of the window, and
the lux hysteresis."""

from __future__ import annotations

import asyncio
import datetime as dt

from control.lighting.astro import AstroClock
from control.lighting.config import LightingConfig
from control.lighting.controller import LightingController
from control.lighting.kind import build_outputs
from control.lighting.photocell import LuxThreshold, ModbusLuxSensor
from control.lighting.state import LightingState
from drivers.modbus.emulator import EmulatedDevice, Fault, TcpServer
from drivers.modbus.link import ModbusLink
from drivers.modbus.profile import Point, Profile
from tests.conftest import free_port
from tests.lighting.conftest import BAC_NINH, lighting_dict, relay


def test_lux_hysteresis():
    value: list[float | None] = [None]
    t = LuxThreshold(lambda: value[0], on_lux=30, off_lux=60)
    seq = [
        (None, None),
        (45, False),
        (25, True),
        (45, True),
        (59, True),
        (61, False),
        (45, False),
        (None, None),
    ]
    for lux, dark in seq:
        value[0] = lux
        assert t.is_dark() is dark, lux


def test_modbus_lux_sensor_drives_the_window(pins):
    port = free_port()
    profile = Profile(
        model="lux-sensor",
        points=[
            Point(name="lux", table="input_register", address=3, type="uint16", scale=0.1, min=0, max=6500)
        ],
    )
    dev = EmulatedDevice(profile, unit=5)
    server = TcpServer([dev], port=port)
    d = lighting_dict(
        photocell={
            "type": "modbus_lux",
            "host": "127.0.0.1",
            "port": port,
            "unit": 5,
            "lux_register": 3,
            "scale": 0.1,
            "on_lux": 20,
            "off_lux": 50,
            "window_min": 30,
            "debounce_s": 0,
        }
    )
    cfg = LightingConfig.model_validate(d)
    pc = cfg.photocell
    assert pc is not None
    astro = AstroClock(*BAC_NINH, "Asia/Ho_Chi_Minh", cfg.astro)
    times = astro.night(dt.date(2026, 11, 20))
    on, off = times.on.timestamp(), times.off.timestamp()

    async def main():
        await server.start()
        sensor = ModbusLuxSensor(pc, ModbusLink.tcp("127.0.0.1", port, 5, 0.5))
        ctl = LightingController(
            "street", cfg, astro, build_outputs(cfg, pins), sensor=sensor, state=LightingState()
        )
        try:
            dev.set_value("lux", 300.0)
            await ctl.step(on - 25 * 60, 0.0)
            assert sensor.lux == 300.0
            assert not relay(pins, 17)
            dev.set_value("lux", 12.5)  # a dark storm 20 min before sunset, inside the window
            await ctl.step(on - 20 * 60, 1.0)
            assert sensor.lux == 12.5
            assert relay(pins, 17)
            # Morning: the sensor stops answering, so the astro time decides.
            dev.set_fault(Fault.NO_ANSWER)
            await ctl.step(off - 20 * 60, 2.0)
            assert sensor.lux is None
            assert relay(pins, 17)
            await ctl.step(off + 60, 3.0)
            assert not relay(pins, 17)
        finally:
            await ctl.close()
            await server.stop()

    asyncio.run(main())
