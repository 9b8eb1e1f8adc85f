"""The technician CLI against a profile-built emulator (subprocesses), and conformance with pymodbus
3.16: our client against pymodbus's server, pymodbus's clients against our emulator."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time

import pytest

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.emulator import EmulatedDevice, Emulator, pymodbus_tcp_server
from drivers.modbus.profile import load_profile
from drivers.transports import TcpTransport
from tests.conftest import agent_argv, agent_env, free_port


def test_emulate_and_read_from_the_command_line():
    emu = subprocess.Popen(
        agent_argv(
            "modbus",
            "emulate",
            "--profile",
            "eastron-sdm120",
            "--profile",
            "xy-md02",
            "--unit",
            "1",
            "--unit",
            "7",
            "--pty",
            "--baud",
            "19200",
        ),
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = emu.stdout.readline()
        path = re.search(r"/dev/pts/\d+", line).group(0)
        out = subprocess.run(
            agent_argv(
                "modbus",
                "read",
                "--port",
                path,
                "--baud",
                "19200",
                "--unit",
                "1",
                "--profile",
                "eastron-sdm120",
            ),
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        table = dict(re.findall(r"^(\w+)\s+(\S+ ?\S*)$", out.stdout, re.M))
        assert table["voltage"].endswith(" V")
        assert 220 <= float(table["voltage"].split()[0]) <= 240
        assert table["frequency"].endswith(" Hz")
        js = subprocess.run(
            agent_argv(
                "modbus",
                "read",
                "--port",
                path,
                "--baud",
                "19200",
                "--unit",
                "7",
                "--profile",
                "xy-md02",
                "--json",
            ),
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = [json.loads(x) for x in js.stdout.splitlines()]
        assert {r["point"] for r in rows} == {
            "temperature",
            "humidity",
            "temperature_correction",
            "humidity_correction",
        }
        assert all(r["quality"] == "GOOD" for r in rows)
        dead = subprocess.run(
            agent_argv(
                "modbus",
                "read",
                "--port",
                path,
                "--baud",
                "19200",
                "--unit",
                "9",
                "--profile",
                "xy-md02",
                "--timeout",
                "0.2",
            ),
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert dead.returncode == 1
        assert "unit 9" in dead.stderr
        assert "does not answer" in dead.stderr
    finally:
        emu.terminate()
        emu.wait(10)
    assert emu.returncode == 0


def test_cli_refuses_bad_arguments():
    out = subprocess.run(
        agent_argv("modbus", "emulate", "--profile", "xy-md02"),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "--tcp PORT or --pty" in out.stderr
    out = subprocess.run(
        agent_argv("modbus", "read", "--port", "tcp://nohost", "--profile", "xy-md02"),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    out = subprocess.run(
        agent_argv("modbus", "read", "--port", "tcp://127.0.0.1:1", "--profile", "no-such"),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "no shipped profile" in out.stderr


def test_our_client_against_the_pymodbus_server():
    async def main():
        profile = load_profile("eastron-sdm120")
        emu = EmulatedDevice(profile, unit=4)
        emu.set_value("voltage", 231.5)
        port = free_port()
        server = await pymodbus_tcp_server([emu], port)
        dev = ModbusDevice(profile, DeviceSettings(name="m", unit=4, timeout_s=1.0))
        bus = ModbusBus("t", TcpTransport("127.0.0.1", port), [dev], "tcp")
        await bus.transport.open()
        try:
            readings = await bus.poll(dev, "fast") + await bus.poll(dev, "slow")
        finally:
            await bus.transport.close()
            await server.shutdown()
        return {r.point: r.value for r in readings}

    got = asyncio.run(main())
    assert got["voltage"] == pytest.approx(231.5)
    assert len(got) == 15


def test_pymodbus_clients_against_our_emulator():
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    async def main():
        emu = Emulator()
        dev = EmulatedDevice(load_profile("soil-7in1"), unit=2)
        dev.set_value("moisture", 42.0)
        port = await emu.add_tcp([dev])
        tcp = AsyncModbusTcpClient("127.0.0.1", port=port)
        await tcp.connect()
        rr = await tcp.read_holding_registers(0, count=7, device_id=2)
        tcp.close()
        rtu_dev = EmulatedDevice(load_profile("xy-md02"), unit=5)
        rtu_dev.set_value("temperature", -3.5)
        path = await emu.add_rtu_line([rtu_dev], 19200)
        serial = AsyncModbusSerialClient(path, baudrate=19200, timeout=2)
        await serial.connect()
        t0 = time.monotonic()
        sr = await serial.read_input_registers(1, count=2, device_id=5)
        serial.close()
        await emu.close()
        return rr, sr, time.monotonic() - t0

    rr, sr, _ = asyncio.run(main())
    assert not rr.isError()
    assert rr.registers[0] == 420
    assert not sr.isError()
    assert sr.registers[0] == (-35) & 0xFFFF


def test_bus_against_the_pymodbus_rtu_server_on_a_pty():
    from drivers.modbus.emulator import Fault, pymodbus_rtu_server
    from kernel.readings import Quality
    from kernel.sink import ListSink
    from tests.drivers.modbus.helpers import context, running

    async def main():
        soil = EmulatedDevice(load_profile("soil-7in1"), unit=1)
        air = EmulatedDevice(load_profile("xy-md02"), unit=2)
        soil.set_value("ph", 6.8)
        air.set_value("humidity", 64.5)
        server, transport = await pymodbus_rtu_server([soil, air], 19200)
        devs = [
            ModbusDevice(
                load_profile("soil-7in1"), DeviceSettings(name="soil", unit=1, fast_s=0.1, slow_s=0.2)
            ),
            ModbusDevice(load_profile("xy-md02"), DeviceSettings(name="air", unit=2, fast_s=0.1, slow_s=0.2)),
        ]
        bus = ModbusBus("pm", transport, devs, "rtu")
        sink = ListSink()
        ctx = context(sink)
        async with running(bus, ctx):
            await asyncio.sleep(0.8)
            air.set_fault(Fault.EXCEPTION, 4)  # through the pymodbus action hook
            await asyncio.sleep(0.5)
            air.set_fault(Fault.NONE)
            await asyncio.sleep(0.8)
            await bus.write("air", "humidity_correction", -2.5)
        await server.shutdown()
        return sink, ctx, air

    sink, ctx, air = asyncio.run(main())
    ph = [r for r in sink.readings if r.point == "ph"]
    hum = [r for r in sink.readings if r.point == "humidity"]
    assert ph
    assert all(r.value == pytest.approx(6.8) and r.quality is Quality.GOOD for r in ph)
    assert hum
    assert all(r.value == pytest.approx(64.5) for r in hum)
    assert ctx.metrics.get("modbus_errors_total", {"device": "air", "kind": "exception_4"}) >= 1
    assert air.tables["holding_register"][0x104] == (-25) & 0xFFFF
