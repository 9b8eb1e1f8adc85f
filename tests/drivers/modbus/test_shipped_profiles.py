"""Each shipped profile decodes known register values taken from its datasheet's examples."""

from __future__ import annotations

import asyncio

import pytest

from drivers.modbus.client import ModbusClient
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.profile import load_profile
from drivers.modbus.protocol import crc16, rtu_frame
from drivers.transports import memory_pair
from kernel.readings import ClockQuality, Quality


def decode(profile: str, table: str, address: int, regs: list[int]) -> dict[str, object]:
    dev = ModbusDevice(load_profile(profile), DeviceSettings(name="d", unit=1))
    out: dict[str, object] = {}
    for block in dev.planner.all_blocks():
        if block.table != table or not (block.address <= address < block.address + block.count):
            continue
        values = [0] * block.count
        for i, r in enumerate(regs):
            if 0 <= address - block.address + i < block.count:
                values[address - block.address + i] = r
        for r in dev.decode(block, values, 0.0, ClockQuality.SYNCED):
            if address <= dev.point(r.point).address < address + len(regs):
                assert r.quality is Quality.GOOD, r
                out[r.point] = r.value
    return out


async def answer_with(frame_hex: str, unit: int, fc: int, address: int, count: int) -> list[int]:
    """Our RTU client reading from a 'device' that answers with the datasheet's literal frame."""
    agent, dev = memory_pair(9600)
    async with agent, dev:
        client = ModbusClient(agent, "rtu")

        async def device() -> None:
            await dev.read_exactly(8, 2.0)
            await dev.write(bytes.fromhex(frame_hex))

        task = asyncio.create_task(device())
        values = await client.read(unit, fc, address, count, 1.0)
        await task
    return [int(v) for v in values]


def test_soil_7in1_datasheet_frames():
    # myduino README: request 01 03 00 00 00 04 44 09; answer 01 03 08 02 62 01 67 00 06 00 37 C2 06.
    assert rtu_frame(1, bytes.fromhex("0300000004")).hex() == "010300000004" + "4409"
    regs = asyncio.run(answer_with("010308026201670006003 7c206".replace(" ", ""), 1, 3, 0, 4))
    got = decode("soil-7in1", "holding_register", 0, regs)
    assert got["moisture"] == pytest.approx(61.0)
    assert got["temperature"] == pytest.approx(35.9)
    assert got["conductivity"] == 6
    assert got["ph"] == pytest.approx(5.5)
    # Second README example: 01 EF / 01 44 / 00 04 -> 49.5 %, 32.4 °C, 4 uS/cm.
    got = decode("soil-7in1", "holding_register", 0, [0x01EF, 0x0144, 0x0004])
    assert (got["moisture"], got["temperature"], got["conductivity"]) == (
        pytest.approx(49.5),
        pytest.approx(32.4),
        4,
    )
    # Below-zero soil temperature is a signed register: 0xFF9C = -10.0 °C.
    assert decode("soil-7in1", "holding_register", 1, [0xFF9C])["temperature"] == pytest.approx(-10.0)


def test_xy_md02_manual_frame():
    frame = bytes.fromhex("0104040131" + "0222")
    frame += crc16(frame).to_bytes(2, "little")
    regs = asyncio.run(answer_with(frame.hex(), 1, 4, 1, 2))
    got = decode("xy-md02", "input_register", 1, regs)
    assert got == {"temperature": pytest.approx(30.5), "humidity": pytest.approx(54.6)}


def test_eastron_sdm120_and_sdm630_ieee754_registers():
    # The Eastron protocol documents give values as IEEE 754 float32, high word first.
    assert decode("eastron-sdm120", "input_register", 0, [0x4366, 0x0000]) == {
        "voltage": pytest.approx(230.0)
    }
    assert decode("eastron-sdm120", "input_register", 0x46, [0x4248, 0x0000]) == {
        "frequency": pytest.approx(50.0)
    }
    assert decode("eastron-sdm120", "input_register", 0x1E, [0xBF73, 0x3333]) == {
        "power_factor": pytest.approx(-0.95)
    }
    got = decode("eastron-sdm630", "input_register", 0x156, [0x447A, 0x0000, 0x4348, 0x0000])
    assert got == {
        "total_active_energy": pytest.approx(1000.0),
        "total_reactive_energy": pytest.approx(200.0),
    }
    assert decode("eastron-sdm630", "input_register", 0xC8, [0x43C7, 0x8000]) == {
        "l1_l2_voltage": pytest.approx(399.0)
    }


def test_supmea_do7013_scaled_integers_and_status_nibbles():
    got = decode("supmea-do7013", "holding_register", 0, [250, 750, 905])
    assert got == {
        "temperature": pytest.approx(25.0),
        "dissolved_oxygen": pytest.approx(7.5),
        "saturation": pytest.approx(90.5),
    }
    got = decode("supmea-do7013", "holding_register", 6, [0x1234])
    assert got == {"status_0": 4, "status_1": 3, "status_2": 2, "status_3": 1}


def test_ysi_odo_ct_floats():
    got = decode("ysi-odo-ct", "input_register", 0x0002, [0x4104, 0x0000])
    assert got == {"odo": pytest.approx(8.25)}
    got = decode("ysi-odo-ct", "input_register", 0x000C, [0x4400, 0x2000])
    assert got == {"conductivity": pytest.approx(512.5)}


def test_nan_from_an_unavailable_ysi_channel_is_bad():
    dev = ModbusDevice(load_profile("ysi-odo-ct"), DeviceSettings(name="d", unit=1))
    [block] = dev.planner.plan("fast")
    values = [0xFFFF] * block.count
    readings = dev.decode(block, values, 0.0, ClockQuality.SYNCED)
    assert all(r.quality is Quality.BAD for r in readings if r.point == "odo")
