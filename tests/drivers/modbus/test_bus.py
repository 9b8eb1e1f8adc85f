"""The bus scheduler against profile-built emulators: reads, writes, faults, splits, TCP reconnect."""

from __future__ import annotations

import asyncio
import logging

import pytest

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.emulator import EmulatedDevice, Fault, RtuLine, TcpServer
from drivers.transports import TcpTransport, memory_pair
from kernel.errors import DeviceError, WriteRefused
from kernel.readings import Priority, Quality
from kernel.sink import ListSink
from tests.conftest import free_port
from tests.drivers.modbus.helpers import context, make_profile, running, until

BAUD = 115200  # fast line: fault tests spend their time on faults, not on the wire


def device(name: str, unit: int, **kw) -> ModbusDevice:
    settings = DeviceSettings(
        name=name,
        unit=unit,
        timeout_s=kw.pop("timeout_s", 0.1),
        fast_s=kw.pop("fast_s", 0.05),
        slow_s=kw.pop("slow_s", 0.5),
        backoff_min_s=0.2,
        backoff_max_s=0.4,
        **kw,
    )
    return ModbusDevice(make_profile(), settings)


async def rtu_rig(n: int = 2, **kw):
    agent_end, emu_end = memory_pair(BAUD)
    emus = [EmulatedDevice(make_profile(), unit=i + 1, seed=i) for i in range(n)]
    for e in emus:
        e.set_value("temp", 21.5 + e.unit)
        e.set_value("count", 1000 + e.unit)
    line = RtuLine(emu_end, emus, BAUD)
    await line.start()
    devs = [device(f"d{i + 1}", i + 1, **kw) for i in range(n)]
    bus = ModbusBus("line", agent_end, devs, "rtu")
    return bus, emus, line


def values(sink: ListSink, dev: str, point: str):
    return [r for r in sink.readings if r.device == dev and r.point == point]


def test_reads_every_point_with_units_and_quality():
    async def main():
        bus, emus, line = await rtu_rig(1)
        sink = ListSink()
        ctx = context(sink)
        async with running(bus, ctx):
            await asyncio.sleep(0.8)
        await line.stop()
        temps = values(sink, "d1", "temp")
        assert temps
        assert temps[0].value == pytest.approx(22.5)
        assert temps[0].unit == "°C"
        assert temps[0].quality is Quality.GOOD
        assert values(sink, "d1", "count")[0].value == 1001
        assert values(sink, "d1", "serial")[0].value == "TestMete"  # the model name, cut to 4 registers
        assert values(sink, "d1", "relay")[0].value is False
        energies = [r.value for r in values(sink, "d1", "energy")]
        assert energies == sorted(energies)  # a counter only rises
        # Minimum requests per fast poll: input regs 0-5, holding 10-12 (+30 within the gap? no: 17 away),
        # holding 30, coil 0, discrete 3 -> 5 blocks.
        assert [(b.table, b.address, b.count) for b in bus.devices["d1"].planner.plan("fast")] == [
            ("coil", 0, 1),
            ("discrete_input", 3, 1),
            ("holding_register", 10, 3),
            ("holding_register", 30, 1),
            ("input_register", 0, 6),
        ]
        polls = ctx.metrics.get("modbus_polls_total", {"device": "d1", "result": "ok"})
        requests = ctx.metrics.get("modbus_requests_total", {"device": "d1"})
        slow_polls = len(values(sink, "d1", "serial"))
        expected = (polls - slow_polls) * 5 + slow_polls * 1
        assert 0 <= requests - expected <= 5  # a poll cut short by the end of the test sent up to 5 more
        assert 0 <= requests - emus[0].requests <= 1  # the last request may still be in flight

    asyncio.run(main())


def test_out_of_range_values_are_marked_bad_not_stored_as_good():
    async def main():
        bus, emus, line = await rtu_rig(1)
        emus[0].set_value("temp", 300.0)  # 300 °C: implausible for this sensor
        sink = ListSink()
        async with running(bus, context(sink)):
            await asyncio.sleep(0.3)
        await line.stop()
        temps = values(sink, "d1", "temp")
        assert temps
        assert all(r.quality is Quality.BAD for r in temps)
        assert "outside plausible range" in temps[0].meta["reason"]

    asyncio.run(main())


def test_write_with_read_back_and_refusals():
    async def main():
        bus, emus, line = await rtu_rig(1)
        ctx = context()
        async with running(bus, ctx):
            await bus.write("d1", "setpoint", 450)
            assert emus[0].tables["holding_register"][10] == 450
            await bus.write("d1", "limit", 12.5)
            await bus.write("d1", "relay", True)
            assert emus[0].tables["coil"][0] == 1
            with pytest.raises(WriteRefused):
                await bus.write("d1", "temp", 1)  # input register: not writable
            with pytest.raises(WriteRefused):
                await bus.write("d1", "locked", 1)  # holding register the profile marks read-only
            with pytest.raises(WriteRefused):
                await bus.write("d1", "setpoint", 5000)  # outside its range
            emus[0].set_fault(Fault.EXCEPTION, 4)
            with pytest.raises(DeviceError):
                await bus.write("d1", "setpoint", 10)
            emus[0].set_fault(Fault.NONE)
        await line.stop()
        assert ctx.metrics.get("modbus_writes_total", {"device": "d1"}) == 4
        assert ctx.metrics.get("modbus_write_errors_total", {"device": "d1"}) == 1

    asyncio.run(main())


FAULTS = [
    (Fault.NO_ANSWER, 0.0, "timeout"),
    (Fault.LATE, 0.3, "timeout"),
    (Fault.CRC, 0.0, "frame"),
    (Fault.WRONG_UNIT, 0.0, "frame"),
    (Fault.EXCEPTION, 4, "exception_4"),
    (Fault.GARBAGE, 0.0, "frame"),
    (Fault.REBOOT, 3.0, "timeout"),  # silent long enough to be marked unavailable on a slow machine
]


@pytest.mark.parametrize(("fault", "arg", "kind"), FAULTS, ids=[f[0].value for f in FAULTS])
def test_every_fault_is_counted_survived_and_recovered(fault, arg, kind, caplog):
    async def main():
        bus, emus, line = await rtu_rig(2)
        sink = ListSink()
        ctx = context(sink)
        with caplog.at_level(logging.INFO, logger="kbe.test"):
            async with running(bus, ctx) as task:
                # Each phase waits for what it is about (with a generous deadline), not for a fixed
                # time: on a loaded machine the same polls take longer.
                await until(lambda: values(sink, "d1", "temp") and values(sink, "d2", "temp"), "both read")
                healthy_before = len(values(sink, "d2", "temp"))
                emus[0].set_fault(fault, arg)
                # d1 is marked unavailable, and the healthy device keeps being read meanwhile (a bus
                # stalled on the faulty device never gets here).
                await until(
                    lambda: "offline" in [r.value for r in values(sink, "d1", "availability")]
                    and len(values(sink, "d2", "temp")) - healthy_before >= 10,
                    "d1 unavailable while d2 is read 10 times",
                )
                healthy_during = len(values(sink, "d2", "temp")) - healthy_before
                faulty_mark = len(values(sink, "d1", "temp"))
                if fault is Fault.REBOOT:
                    await until(lambda: not emus[0].rebooting, "the reboot over")  # it ends by itself
                else:
                    emus[0].set_fault(Fault.NONE)
                # The poll that reads d1 again also logs it back and sends the "online" event.
                await until(lambda: len(values(sink, "d1", "temp")) > faulty_mark, "d1 read again")
                assert not task.done()
        await line.stop()
        assert ctx.metrics.get("modbus_errors_total", {"device": "d1", "kind": kind}) >= 1
        assert ctx.metrics.get("modbus_errors_total", {"device": "d2", "kind": kind}) == 0
        assert healthy_during >= 10  # the healthy device kept being read during the fault
        assert len(values(sink, "d1", "temp")) > faulty_mark  # recovered
        for r in values(sink, "d1", "temp"):
            assert r.value == pytest.approx(22.5)  # never a wrong value
        for r in values(sink, "d1", "count"):
            assert r.value == 1001
        unavailable = [m for m in caplog.messages if "d1 (unit 1" in m and "unavailable" in m]
        back = [m for m in caplog.messages if "d1 (unit 1" in m and "available again" in m]
        assert len(unavailable) == 1
        assert len(back) == 1
        # The same two moments as events that travel to the centre, never for the healthy device.
        events = values(sink, "d1", "availability")
        assert [r.value for r in events] == ["offline", "online"]
        assert {r.priority for r in events} == {Priority.EVENT}
        assert values(sink, "d2", "availability") == []

    asyncio.run(main())


def test_refused_block_is_split_and_other_points_still_read():
    async def main():
        agent_end, emu_end = memory_pair(BAUD)
        emu = EmulatedDevice(
            make_profile(), unit=1, holes=[("input_register", 5)]
        )  # 'count' low word refused
        line = RtuLine(emu_end, [emu], BAUD)
        await line.start()
        bus = ModbusBus("line", agent_end, [device("d1", 1)], "rtu")
        sink = ListSink()
        ctx = context(sink)
        async with running(bus, ctx):
            await asyncio.sleep(0.8)
        await line.stop()
        assert values(sink, "d1", "temp")
        assert values(sink, "d1", "energy")
        assert not values(sink, "d1", "count")
        assert "count" in bus.devices["d1"].planner.refused
        splits = ctx.metrics.get("modbus_blocks_split_total", {"device": "d1"})
        assert 1 <= splits <= 3  # split until the refused point is isolated, then never again

    asyncio.run(main())


@pytest.mark.parametrize("outstanding", [1, 4])
def test_tcp_drop_reconnects_and_keeps_reading(caplog, outstanding):
    async def main():
        emu = EmulatedDevice(make_profile(), unit=1)
        emu.set_value("temp", 20.0)
        server = TcpServer([emu], max_outstanding=outstanding)
        await server.start()
        bus = ModbusBus(
            "tcp", TcpTransport("127.0.0.1", server.port), [device("d1", 1)], "tcp", max_outstanding=outstanding
        )
        sink = ListSink()
        ctx = context(sink)
        def dropped() -> float:
            return ctx.metrics.get("modbus_transport_errors_total", {"bus": "tcp"})

        with caplog.at_level(logging.INFO, logger="kbe.test"):
            async with running(bus, ctx) as task:
                await until(lambda: values(sink, "d1", "temp"), "d1 read")
                emu.set_fault(Fault.TCP_DROP)  # the next request closes the connection
                await until(lambda: dropped() >= 1 and server.connections >= 2, "the dropped connection reopened")
                mark = len(values(sink, "d1", "temp"))
                server.drop_connections()
                await until(
                    lambda: dropped() >= 2 and server.connections >= 3 and len(values(sink, "d1", "temp")) > mark,
                    "reopened after the gateway's reboot and read again",
                )
                assert not task.done()
        await server.stop()
        assert server.connections >= 3
        assert ctx.metrics.get("modbus_transport_errors_total", {"bus": "tcp"}) >= 2
        assert len(values(sink, "d1", "temp")) > mark
        assert all(r.value == pytest.approx(20.0) for r in values(sink, "d1", "temp"))
        assert any("reopened" in m for m in caplog.messages)

    asyncio.run(main())


def test_tcp_server_restart_is_picked_up():
    async def main():
        emu = EmulatedDevice(make_profile(), unit=1)
        # Not a port the kernel picked: during the outage the bus reconnects over and over, and an
        # outgoing connection could be handed the ephemeral port (even connect to itself on it).
        port = free_port()
        server = TcpServer([emu], port=port)
        await server.start()
        bus = ModbusBus("tcp", TcpTransport("127.0.0.1", port, connect_timeout=0.5), [device("d1", 1)], "tcp")
        bus.reconnect_max_s = 0.5
        sink = ListSink()
        async with running(bus, context(sink)):
            await until(lambda: sink.readings, "read before the outage")
            await server.stop()
            await asyncio.sleep(1.0)  # the outage: the bus keeps trying to reconnect
            mark = len(sink.readings)
            server = TcpServer([emu], port=port)
            await server.start()
            await until(lambda: len(sink.readings) > mark, "read again after the restart")
        await server.stop()
        assert len(sink.readings) > mark

    asyncio.run(main())


def test_rtu_over_tcp_through_a_serial_gateway():
    from drivers.modbus.emulator import Emulator
    from drivers.transports.config import RtuOverTcpLine, framing_of

    async def main():
        emu = Emulator()
        emus = [EmulatedDevice(make_profile(), unit=u) for u in (1, 2)]
        for e in emus:
            e.set_value("temp", 10.0 + e.unit)
        port = await emu.add_rtu_gateway(emus, baudrate=19200)
        line = RtuOverTcpLine(type="rtu-over-tcp", host="127.0.0.1", port=port, baudrate=19200)
        assert framing_of(line) == "rtu"
        bus = ModbusBus(line.key(), line.build(), [device("d1", 1), device("d2", 2)], framing_of(line))
        sink = ListSink()
        async with running(bus, context(sink)):
            await asyncio.sleep(1.0)
            await bus.write("d2", "setpoint", 77)
        await emu.close()
        assert emus[1].tables["holding_register"][10] == 77
        return sink

    sink = asyncio.run(main())
    assert values(sink, "d1", "temp")[0].value == pytest.approx(11.0)
    assert values(sink, "d2", "temp")[0].value == pytest.approx(12.0)
