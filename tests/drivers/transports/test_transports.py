"""Transports: memory pair with faults, pty, TCP, serial (over a pty), lifecycle and timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.transports import (
    MemoryTransport,
    PtyPair,
    PtyTransport,
    SerialTransport,
    TcpTransport,
    faults,
    memory_pair,
)
from drivers.transports.config import PtyLine, RtuOverTcpLine, SerialLine, TcpLine, framing_of, parse_port
from kernel.errors import DeviceTimeout, TransportClosed, TransportError
from tests.conftest import free_port


def run(coro):
    return asyncio.run(coro)


def test_memory_pair_roundtrip_and_context_manager():
    async def main():
        a, b = memory_pair()
        async with a, b:
            assert not a.closed
            await a.write(b"hello")
            assert await b.read_exactly(5, 1.0) == b"hello"
        assert a.closed
        assert b.closed
        with pytest.raises(TransportClosed):
            await a.write(b"x")

    run(main())


def test_read_times_out_with_device_timeout():
    async def main():
        a, b = memory_pair()
        async with a, b:
            t0 = time.monotonic()
            with pytest.raises(DeviceTimeout):
                await b.read(1, 0.05)
            assert 0.04 < time.monotonic() - t0 < 1.0
            await a.write(b"ab")
            with pytest.raises(DeviceTimeout):
                await b.read_exactly(3, 0.05)

    run(main())


def test_fault_drop_delay_split_corrupt_garbage():
    async def main():
        a, b = memory_pair()
        async with a, b:
            a.set_manipulator(faults.drop())
            await a.write(b"lost")
            with pytest.raises(DeviceTimeout):
                await b.read(4, 0.05)
            a.set_manipulator(faults.delay(0.1))
            t0 = time.monotonic()
            await a.write(b"late")
            assert await b.read_exactly(4, 1.0) == b"late"
            assert time.monotonic() - t0 >= 0.09
            a.set_manipulator(faults.split(2, gap_s=0.02))
            await a.write(b"abcdef")
            assert await b.read(10, 1.0) == b"ab"
            assert await b.read_exactly(4, 1.0) == b"cdef"
            a.set_manipulator(faults.corrupt(0, 0xFF))
            await a.write(b"\x00\x01")
            assert await b.read_exactly(2, 1.0) == b"\xff\x01"
            a.set_manipulator(faults.chain(faults.garbage(3, seed=1), faults.split(1)))
            await a.write(b"zzzz")
            got = await b.read_exactly(3, 1.0)
            assert len(got) == 3
            assert got != b"zzz"
            a.set_manipulator(None)
            await a.write(b"ok")
            assert await b.read_exactly(2, 1.0) == b"ok"

    run(main())


def test_close_wakes_a_pending_reader():
    async def main():
        a, b = memory_pair()
        await a.open()
        await b.open()
        reader = asyncio.create_task(b.read(1, 5.0))
        await asyncio.sleep(0.01)
        await b.close()
        with pytest.raises(TransportClosed):
            await reader

    run(main())


def test_input_buffer_is_bounded():
    async def main():
        a, b = memory_pair()
        async with a, b:
            await a.write(b"x" * 70_000)
            assert b.pending() == 64 * 1024
            assert b.dropped_bytes == 70_000 - 64 * 1024
            assert b.reset_input() == 64 * 1024

    run(main())


def test_pty_pair_both_ways_and_reopen():
    async def main():
        pair = PtyPair(baudrate=9600)
        agent = PtyTransport(pair.path, 9600)
        async with pair.master:
            for _ in range(2):  # the agent side closes and reopens; the line stays up
                async with agent:
                    await agent.write(b"\x01\x03req")
                    assert await pair.master.read_exactly(5, 1.0) == b"\x01\x03req"
                    await pair.master.write(bytes(range(256)))  # raw mode: every byte passes untouched
                    assert await agent.read_exactly(256, 1.0) == bytes(range(256))
        pair.close()
        assert agent.char_time() == pytest.approx(10 / 9600)

    run(main())


def test_serial_transport_on_a_pty():
    async def main():
        pair = PtyPair()
        port = SerialTransport(pair.path, 19200, "E", 1)
        assert port.bits_per_char == 11
        async with pair.master, port:
            await pair.master.write(b"\x11\x22")
            assert await port.read_exactly(2, 1.0) == b"\x11\x22"
            await port.write(b"\x33")
            assert await pair.master.read_exactly(1, 1.0) == b"\x33"
        pair.close()
        with pytest.raises(TransportError):
            await SerialTransport("/dev/does-not-exist").open()

    run(main())


def test_tcp_roundtrip_peer_drop_and_refused():
    async def main():
        conns = []

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            conns.append(w)
            data = await r.read(100)
            w.write(data.upper())
            await w.drain()

        port = free_port()
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        t = TcpTransport("127.0.0.1", port)
        async with t:
            await t.write(b"abc")
            assert await t.read_exactly(3, 1.0) == b"ABC"
            conns[0].close()
            with pytest.raises(TransportClosed):
                await t.read(1, 1.0)
            assert t.closed
        await t.open()  # reconnect after a drop
        await t.write(b"x")
        assert await t.read(1, 1.0) == b"X"
        await t.close()
        server.close()
        await server.wait_closed()
        with pytest.raises(TransportError):
            await TcpTransport("127.0.0.1", free_port(), connect_timeout=1.0).open()

    run(main())


def test_line_config_builds_the_right_transport():
    assert isinstance(SerialLine(type="serial", port="/dev/ttyUSB0").build(), SerialTransport)
    assert isinstance(PtyLine(type="pty", path="/dev/pts/9").build(), PtyTransport)
    tcp = TcpLine(type="tcp", host="10.0.0.5").build()
    assert isinstance(tcp, TcpTransport)
    assert tcp.port == 502
    assert tcp.baudrate is None
    rot = RtuOverTcpLine(type="rtu-over-tcp", host="gw", port=4001, baudrate=19200)
    assert framing_of(rot) == "rtu"
    assert rot.build().baudrate == 19200
    assert framing_of(TcpLine(type="tcp", host="h")) == "tcp"
    assert parse_port("tcp://127.0.0.1:5020") == TcpLine(type="tcp", host="127.0.0.1", port=5020)
    assert isinstance(parse_port("rtu+tcp://gw:4001"), RtuOverTcpLine)
    assert isinstance(parse_port("/dev/pts/3"), PtyLine)
    assert isinstance(parse_port("/dev/ttyUSB0", 4800, "E"), SerialLine)
    with pytest.raises(ValueError):
        parse_port("tcp://nohost")
    assert isinstance(MemoryTransport(), MemoryTransport)
