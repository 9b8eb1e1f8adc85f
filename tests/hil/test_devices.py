"""The emulator bank: faults at a rate through both Modbus front ends, serial fault switches, and the
generated site config accepted by the agent's own config model."""

from __future__ import annotations

import asyncio
import struct

import pytest

from agent.config import parse_config
from drivers.modbus import protocol as p
from drivers.modbus.emulator import Fault, RtuLine, TcpServer
from drivers.modbus.kind import cached_profile
from drivers.transports import memory_pair
from hil.devices import EmulatorBank, rated_device
from hil.rig import AgentSettings, parse_rig
from kernel.errors import DeviceTimeout

READ_T = p.read_request(4, 1, 2)  # XY-MD02 temperature and humidity (input registers 1-2)


async def _rtu_outcomes(dev: object, n: int) -> dict[str, int]:
    host, line_end = memory_pair(baudrate=115200)
    line = RtuLine(line_end, [dev], 115200)  # type: ignore[list-item]
    await host.open()
    await line.start()
    out = {"ok": 0, "crc": 0, "none": 0}
    try:
        for _ in range(n):
            host.reset_input()
            await host.write(p.rtu_frame(1, READ_T))
            try:
                answer = await host.read_exactly(9, 0.3)
            except DeviceTimeout:
                out["none"] += 1
                continue
            try:
                p.check_crc(answer)
                out["ok"] += 1
            except ValueError:
                out["crc"] += 1
    finally:
        await line.stop()
        await host.close()
    return out


def test_crc_at_a_rate_hits_about_that_share_of_rtu_requests() -> None:
    dev = rated_device(cached_profile("xy-md02"), 1, seed=3)
    dev.set_rated_fault(Fault.CRC, 0.0, 0.3)
    out = asyncio.run(_rtu_outcomes(dev, 120))
    assert out["none"] == 0
    assert 15 <= out["crc"] <= 60, out  # 30 % of 120 is 36
    dev.set_rated_fault(Fault.NONE)
    assert asyncio.run(_rtu_outcomes(dev, 10)) == {"ok": 10, "crc": 0, "none": 0}


def test_dead_at_full_rate_and_a_reboot_leaves_the_standing_fault() -> None:
    dev = rated_device(cached_profile("xy-md02"), 1, seed=3)
    dev.set_rated_fault(Fault.NO_ANSWER)
    assert asyncio.run(_rtu_outcomes(dev, 3)) == {"ok": 0, "crc": 0, "none": 3}
    dev.set_rated_fault(Fault.CRC, 0.0, 1.0)
    dev.set_rated_fault(Fault.REBOOT, 0.5)
    assert asyncio.run(_rtu_outcomes(dev, 2))["none"] == 2
    import time

    time.sleep(0.6)
    assert asyncio.run(_rtu_outcomes(dev, 3)) == {"ok": 0, "crc": 3, "none": 0}


async def _tcp_exceptions(dev: object, n: int) -> int:
    server = TcpServer([dev])  # type: ignore[list-item]
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    exceptions = 0
    try:
        for tid in range(n):
            writer.write(struct.pack(">HHHB", tid, 0, len(READ_T) + 1, 1) + READ_T)
            head = await asyncio.wait_for(reader.readexactly(7), 2)
            body = await reader.readexactly(struct.unpack(">H", head[4:6])[0] - 1)
            exceptions += body[0] & 0x80 != 0
    finally:
        writer.close()
        await server.stop()
    return exceptions


def test_exception_at_a_rate_over_tcp() -> None:
    dev = rated_device(cached_profile("xy-md02"), 1, seed=5)
    dev.set_rated_fault(Fault.EXCEPTION, 6.0, 0.5)
    hits = asyncio.run(_tcp_exceptions(dev, 100))
    assert 25 <= hits <= 75


RIG = {
    "rig": "bank",
    "duration_s": 60,
    "lines": [{"name": "bus", "type": "rtu", "baudrate": 19200}, {"name": "gw", "type": "tcp"}],
    "devices": [
        {"kind": "modbus", "name": "th", "profile": "xy-md02", "line": "bus", "unit": 1},
        {"kind": "modbus", "name": "meter", "profile": "eastron-sdm120", "line": "gw", "unit": 2},
        {"kind": "serial", "name": "pm", "sensor": "pms5003"},
        {
            "kind": "gpio",
            "name": "io",
            "outputs": [{"name": "relay-1", "pin": 17}],
            "inputs": [{"name": "door", "pin": 22, "kind": "door"}],
        },
        {"kind": "system", "name": "board", "period_s": 5, "ranges": {"load1": [0, 64]}},
    ],
    "faults": [
        {"kind": "garbage", "device": "pm", "rate": 0.25},
        {"kind": "dead", "device": "pm", "at_s": 10, "until_s": 20},
        {"kind": "late", "device": "meter", "delay_s": 1.0, "rate": 0.5},
        {"kind": "tcp_drop", "line": "gw", "at_s": 5},
    ],
}


@pytest.mark.timeout(30)
def test_bank_site_config_ranges_and_fault_switches() -> None:
    rig = parse_rig(RIG)

    async def go() -> None:
        bank = EmulatorBank(rig)
        await bank.start()
        try:
            devices = bank.site_devices(AgentSettings())
            cfg = parse_config(
                {
                    "site": {"id": "hil-bank", "name": "t", "location": {"lat": 21, "lon": 106}},
                    "devices": devices,
                }
            )
            assert [d.name for d in cfg.devices] == ["th", "meter", "pm", "io", "board"]
            assert devices[0]["line"] == {
                "type": "pty",
                "path": bank.line_paths["bus"],
                "baudrate": 19200,
                "parity": "N",
            }
            assert devices[1]["line"]["port"] == bank.gateway_ports["gw"]
            ranges = bank.ranges()
            assert ranges["th"]["temperature"] == (-40.0, 125.0)
            assert ranges["pm"]["pm2_5"] == (0.0, 1000.0)
            assert ranges["io"]["relay-1"] == (0.0, 1.0)
            assert ranges["board"] == {"load1": (0, 64)}
            pm = bank.serial["pm"]
            bank.inject(rig.faults[0], True)
            bank.inject(rig.faults[1], True)
            assert (pm.faults.garbage, pm.faults.silence) == (0.25, True)
            bank.inject(rig.faults[1], False)
            bank.inject(rig.faults[0], False)
            assert (pm.faults.garbage, pm.faults.silence) == (0.0, False)
            meter = bank.modbus["meter"]
            bank.inject(rig.faults[2], True)
            assert (meter.rated_fault, meter.fault_arg, meter.rate) == (Fault.LATE, 1.0, 0.5)
            bank.inject(rig.faults[2], False)
            assert meter.rated_fault is Fault.NONE
            # A connected client is dropped by tcp_drop.
            reader, writer = await asyncio.open_connection("127.0.0.1", bank.gateway_ports["gw"])
            await asyncio.sleep(0.05)
            bank.inject(rig.faults[3], True)
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()
        finally:
            await bank.close()

    asyncio.run(go())
