"""The serial sensor kinds in the site config, and how a lost port ends a source (for a restart)."""

from __future__ import annotations

import asyncio

import pytest

from agent.config import parse_config
from drivers.pms.driver import Config as PmsConfig
from drivers.pms.driver import PmsSource
from drivers.pms.emulator import PmsEmulator
from kernel.errors import ConfigError, TransportError
from tests.drivers.serial.helpers import make_ctx, wait_for

SITE = {"site": {"id": "aq1", "name": "Air station", "location": {"lat": 21.18, "lon": 106.07}}}


def test_site_config_with_every_serial_kind():
    devices = [
        {
            "driver": "pms",
            "name": "pm",
            "line": {"type": "serial", "port": "/dev/ttyAMA0"},
            "mode": "passive",
        },
        {"driver": "sds011", "name": "dust", "line": {"type": "serial", "port": "/dev/ttyUSB1"}},
        {
            "driver": "nmea_gps",
            "name": "gps",
            "line": {"type": "serial", "port": "/dev/ttyS0", "baudrate": 4800},
        },
    ]
    cfg = parse_config(SITE | {"devices": devices})
    assert [d.driver for d in cfg.devices] == ["pms", "sds011", "nmea_gps"]


def test_wrong_serial_config_names_the_field():
    devices = [
        {"driver": "sds011", "name": "dust", "line": {"type": "serial", "port": "/dev/ttyUSB1"}},
        {"driver": "pms", "name": "pm", "line": {"type": "serial", "port": "/dev/x"}, "sleep_between": True},
    ]
    with pytest.raises(ConfigError) as info:
        parse_config(SITE | {"devices": devices})
    assert any(p.startswith("devices[1]") and "needs mode passive" in p for p in info.value.problems)


def test_lost_port_ends_the_source_with_a_transport_error():
    emu = PmsEmulator(fast=True, seed=2)
    path = emu.start()
    ctx = make_ctx()
    cfg = PmsConfig.model_validate({"driver": "pms", "name": "pm", "line": {"type": "pty", "path": path}})
    src = PmsSource(cfg)

    async def main():
        task = asyncio.create_task(src.run(ctx))
        await wait_for(ctx, lambda rs: any(r.point == "online" for r in rs), 10)
        await asyncio.to_thread(emu.stop)  # the USB adapter is unplugged
        with pytest.raises(TransportError):
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_two_sensors_on_one_port_are_refused():
    from drivers.sds011.driver import Config as SdsConfig
    from drivers.sds011.driver import build_sources

    line = {"type": "serial", "port": "/dev/ttyUSB1"}
    configs = [
        SdsConfig.model_validate({"driver": "sds011", "name": "a", "line": line}),
        SdsConfig.model_validate({"driver": "sds011", "name": "b", "line": line}),
    ]
    with pytest.raises(ConfigError, match=r"b\.line: serial:/dev/ttyUSB1 is already used by a"):
        build_sources(configs, make_ctx())


def test_emulators_by_kind_start_and_stop():
    from kernel.kinds import KindRegistry

    kinds = KindRegistry()
    for kind in ("pms", "sds011", "nmea_gps", "pms5003", "nmea"):
        emu = kinds.emulator(kind, seed=1)
        path = emu.start()
        assert path.startswith("/dev/")
        emu.faults.set(silence=True)
        emu.stop()
    assert type(kinds.emulator("pms5003")) is type(kinds.emulator("pms"))
    with pytest.raises(ValueError, match="no emulator for device kind 'camera'"):
        kinds.emulator("camera")
    with pytest.raises(ValueError, match="unknown fault"):
        kinds.emulator("pms").faults.set(crc=0.5)
