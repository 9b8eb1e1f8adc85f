"""Modbus TCP pipelining: answers matched by transaction id over a real TCP connection.

The fault tests talk to a scripted MBAP server (a real asyncio TCP server whose answers the test
chooses: reordered, lost, with a wrong transaction id or unit, late, malformed), because the
emulator answers correctly by design. The bus tests use the project's emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.emulator import EmulatedDevice, TcpServer
from drivers.modbus.mbap import HEADER_LEN, MbapFramer
from drivers.modbus.pipeline import MbapPipeline
from drivers.transports import TcpTransport
from kernel.errors import DeviceTimeout, FrameError, TransportError
from kernel.sink import ListSink
from tests.drivers.modbus.helpers import context, make_profile, running, until

Request = tuple[int, int, bytes]  # tid, unit, pdu
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def next_request(reader: asyncio.StreamReader) -> Request:
    h = MbapFramer.header(await reader.readexactly(HEADER_LEN))
    return h.tid, h.unit, await reader.readexactly(h.pdu_len)


def answer(tid: int, unit: int, pdu: bytes) -> bytes:
    """An fc 3 answer carrying the request's address as its one register (so each answer is its own)."""
    address = struct.unpack(">H", pdu[1:3])[0]
    return MbapFramer.frame(tid, unit, bytes([3, 2]) + address.to_bytes(2, "big"))


def read_pdu(address: int) -> bytes:
    return struct.pack(">BHH", 3, address, 1)


@contextlib.asynccontextmanager
async def scripted(script: Script, max_outstanding: int = 4) -> AsyncIterator[MbapPipeline]:
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = TcpTransport("127.0.0.1", port)
    await transport.open()
    pipe = MbapPipeline(transport, max_outstanding)
    pipe.start()
    try:
        yield pipe
    finally:
        await pipe.stop()
        await transport.close()
        server.close()


async def gather_reads(pipe: MbapPipeline, addresses: list[int], timeout: float = 0.3) -> list[object]:
    async def one(a: int) -> bytes:
        return await pipe.transact(1, read_pdu(a), timeout)

    return await asyncio.gather(*(one(a) for a in addresses), return_exceptions=True)


def value_of(body: object) -> int:
    assert isinstance(body, bytes), body
    return int.from_bytes(body[2:4], "big")


def test_answers_out_of_order_reach_their_requests() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reqs = [await next_request(reader) for _ in range(3)]  # all three in flight at once
        for tid, unit, pdu in reversed(reqs):
            writer.write(answer(tid, unit, pdu))
        await reader.read()

    async def main() -> None:
        async with scripted(script) as pipe:
            got = await gather_reads(pipe, [10, 20, 30])
            assert [value_of(b) for b in got] == [10, 20, 30]
            assert pipe.stale == 0
            assert pipe.in_flight == 0

    asyncio.run(main())


def test_requests_of_one_loop_turn_leave_in_one_write() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(answer(*await next_request(reader)))

    async def main() -> None:
        async with scripted(script) as pipe:
            got = await gather_reads(pipe, [10, 20, 30, 40])
            assert [value_of(b) for b in got] == [10, 20, 30, 40]
            assert pipe.writes == 1  # four requests, one system call

    asyncio.run(main())


def test_a_lost_answer_times_out_alone() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            tid, unit, pdu = await next_request(reader)
            if pdu != read_pdu(20):
                writer.write(answer(tid, unit, pdu))

    async def main() -> None:
        async with scripted(script) as pipe:
            got = await gather_reads(pipe, [10, 20, 30], timeout=0.3)
            assert value_of(got[0]) == 10
            assert value_of(got[2]) == 30
            assert isinstance(got[1], DeviceTimeout)
            assert value_of((await gather_reads(pipe, [40]))[0]) == 40  # the connection still works

    asyncio.run(main())


def test_a_wrong_transaction_id_is_dropped_and_counted() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            tid, unit, pdu = await next_request(reader)
            wrong = pdu == read_pdu(20)
            writer.write(answer((tid + 1000) & 0xFFFF if wrong else tid, unit, pdu))

    counted: list[float] = []

    async def main() -> None:
        async with scripted(script) as pipe:
            pipe._count_stale = counted.append
            got = await gather_reads(pipe, [10, 20, 30], timeout=0.3)
            assert value_of(got[0]) == 10
            assert value_of(got[2]) == 30
            assert isinstance(got[1], DeviceTimeout)  # never handed the answer meant for nobody
            assert pipe.stale == 1
            assert counted == [1]

    asyncio.run(main())


def test_a_timeout_among_several_outstanding_and_its_late_answer() -> None:
    late_sent: list[bool] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reqs = [await next_request(reader) for _ in range(3)]
        late = reqs.pop(1)
        for tid, unit, pdu in reqs:
            writer.write(answer(tid, unit, pdu))
        await asyncio.sleep(1.0)  # well past the late one's timeout
        late_sent.append(True)
        writer.write(answer(*late))
        while True:
            writer.write(answer(*await next_request(reader)))

    async def main() -> None:
        async with scripted(script) as pipe:
            got = await gather_reads(pipe, [10, 20, 30], timeout=0.25)
            assert value_of(got[0]) == 10
            assert value_of(got[2]) == 30
            assert isinstance(got[1], DeviceTimeout)
            # Judged by order, not by wall time: all three were settled before the late answer was
            # even sent (the others did not wait for the late one).
            assert not late_sent
            await until(lambda: pipe.stale == 1, "the late answer came, to nobody")
            assert [value_of(b) for b in await gather_reads(pipe, [40, 50])] == [40, 50]

    asyncio.run(main())


def test_wrong_unit_fails_only_that_request() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            tid, unit, pdu = await next_request(reader)
            writer.write(answer(tid, unit + 1 if pdu == read_pdu(20) else unit, pdu))

    async def main() -> None:
        async with scripted(script) as pipe:
            got = await gather_reads(pipe, [10, 20, 30])
            assert isinstance(got[1], FrameError)
            assert "unit 2" in str(got[1])
            assert value_of(got[0]) == 10
            assert value_of(got[2]) == 30

    asyncio.run(main())


def test_a_malformed_header_fails_what_is_in_flight_then_resyncs() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reqs = [await next_request(reader) for _ in range(2)]
        writer.write(MbapFramer.frame(reqs[0][0], 1, b"\x03\x02\x00\x01", protocol=9))
        while True:
            writer.write(answer(*await next_request(reader)))

    async def main() -> None:
        async with scripted(script) as pipe:
            got = await gather_reads(pipe, [10, 20])
            assert all(isinstance(g, FrameError) for g in got), got
            assert pipe.resyncs == 1
            assert value_of((await gather_reads(pipe, [30]))[0]) == 30

    asyncio.run(main())


def test_a_lost_connection_fails_every_request_in_flight() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            await next_request(reader)
        writer.close()

    async def main() -> None:
        async with scripted(script) as pipe:
            got = await gather_reads(pipe, [10, 20, 30], timeout=2.0)
            assert all(isinstance(g, TransportError) for g in got), got
            with pytest.raises(TransportError):
                await pipe.transact(1, read_pdu(40), 0.5)

    asyncio.run(main())


def test_never_more_than_max_outstanding_in_flight() -> None:
    seen: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            batch = [await next_request(reader)]
            await asyncio.sleep(0.05)  # let every request the client may send arrive
            while len(reader._buffer) >= HEADER_LEN:  # type: ignore[attr-defined]
                batch.append(await next_request(reader))
            seen.append(len(batch))
            for req in batch:
                writer.write(answer(*req))

    async def main() -> None:
        async with scripted(script, max_outstanding=3) as pipe:
            got = await gather_reads(pipe, list(range(10)), timeout=2.0)
            assert [value_of(b) for b in got] == list(range(10))
        assert max(seen) == 3

    asyncio.run(main())


def test_max_outstanding_is_validated() -> None:
    with pytest.raises(ValueError):
        MbapPipeline(TcpTransport("127.0.0.1", 1), 0)
    with pytest.raises(ValueError):
        MbapPipeline(TcpTransport("127.0.0.1", 1), 33)
    with pytest.raises(ValueError, match="Modbus TCP"):
        ModbusBus("rtu", TcpTransport("127.0.0.1", 1), [], "rtu", max_outstanding=4)


# -- the bus ----------------------------------------------------------------------------------------
def devices(n: int) -> list[ModbusDevice]:
    return [
        ModbusDevice(make_profile(), DeviceSettings(name=f"d{u}", unit=u, timeout_s=0.5, fast_s=0.01, slow_s=60))
        for u in range(1, n + 1)
    ]


async def polls_in(window_s: float, outstanding: int) -> tuple[int, ListSink, TcpServer]:
    emus = [EmulatedDevice(make_profile(), unit=u, seed=u, turnaround_s=0.02) for u in range(1, 9)]
    for e in emus:
        e.set_value("count", 1000 + e.unit)
    server = TcpServer(emus, max_outstanding=outstanding)
    await server.start()
    bus = ModbusBus("gw", TcpTransport("127.0.0.1", server.port), devices(8), "tcp", max_outstanding=outstanding)
    sink = ListSink()
    ctx = context(sink)
    async with running(bus, ctx):
        await asyncio.sleep(window_s)
    await server.stop()
    polls = sum(int(ctx.metrics.get("modbus_polls_total", {"device": f"d{u}", "result": "ok"})) for u in range(1, 9))
    return polls, sink, server


def test_pipelined_bus_polls_faster_through_a_slow_gateway_and_reads_right() -> None:
    async def main() -> None:
        one, _, _ = await polls_in(1.0, 1)
        four, sink, server = await polls_in(1.0, 4)
        # 20 ms turnaround per request: one at a time caps the bus near 50 requests/s, four near 200.
        assert four >= 2.5 * one, (one, four)
        assert server.most_in_flight == 4
        counts = {r.device: r.value for r in sink.readings if r.point == "count"}
        assert counts == {f"d{u}": 1000 + u for u in range(1, 9)}  # each device got its own answers

    asyncio.run(main())
