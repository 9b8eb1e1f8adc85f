"""Property tests of the framers: whatever bytes come back, the client raises a DeviceError or
returns exactly the values the device holds; never a wrong value."""

from __future__ import annotations

import asyncio
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus import protocol as p
from drivers.modbus.client import ModbusClient
from drivers.transports import memory_pair
from kernel.errors import DeviceError

REGS = [0x1234, 0xABCD, 0x0000, 0xFFFF]


async def exchange(framing: str, answer: bytes, tid_offset: int = 0):
    agent, dev = memory_pair(115200 if framing == "rtu" else None)
    async with agent, dev:
        client = ModbusClient(agent, framing)  # type: ignore[arg-type]

        async def device() -> None:
            req = await dev.read(260, 2.0)
            if framing == "tcp":
                # keep the request's transaction id so only the payload decides
                await dev.write(req[:2] + answer[2:])
            else:
                await dev.write(answer)

        task = asyncio.create_task(device())
        try:
            return await client.read(7, 3, 100, 4, 0.05)
        finally:
            await task


def good_rtu() -> bytes:
    return p.rtu_frame(7, bytes([3, 8]) + struct.pack(">4H", *REGS))


def good_tcp() -> bytes:
    pdu = bytes([3, 8]) + struct.pack(">4H", *REGS)
    return struct.pack(">HHHB", 0, 0, len(pdu) + 1, 7) + pdu


def run(framing: str, answer: bytes):
    try:
        return asyncio.run(exchange(framing, answer))
    except DeviceError as exc:
        return exc


def test_good_frames_decode():
    assert run("rtu", good_rtu()) == REGS
    assert run("tcp", good_tcp()) == REGS


@settings(max_examples=150, deadline=None)
@given(framing=st.sampled_from(["rtu", "tcp"]), data=st.data())
def test_corrupted_answers_never_give_wrong_values(framing, data):
    frame = bytearray(good_rtu() if framing == "rtu" else good_tcp())
    # RTU: anywhere (the CRC must catch it). TCP carries no checksum of its own (TCP's protects the
    # payload), so only the framing bytes are mangled: header, function code, byte count.
    last = len(frame) - 1 if framing == "rtu" else 8
    flips = data.draw(st.lists(st.tuples(st.integers(0, last), st.integers(1, 255)), min_size=1, max_size=3))
    for i, mask in flips:
        frame[i] ^= mask
    if framing == "tcp":
        frame[0:2] = b"\x00\x00"  # the transaction id is replaced by the request's anyway
    result = run(framing, bytes(frame))
    assert isinstance(result, DeviceError) or result == REGS


@settings(max_examples=100, deadline=None)
@given(framing=st.sampled_from(["rtu", "tcp"]), junk=st.binary(min_size=0, max_size=40))
def test_random_bytes_are_an_error(framing, junk):
    result = run(framing, junk)
    assert isinstance(result, DeviceError) or result == REGS


def test_a_babbling_line_does_not_hold_the_bus():
    """A device streaming noise: the request fails within a bounded time, it does not hang."""
    import time

    async def main():
        agent, dev = memory_pair(115200)
        async with agent, dev:
            client = ModbusClient(agent, "rtu")
            stop = asyncio.Event()

            async def babble() -> None:
                while not stop.is_set():
                    await dev.write(b"\x07\x03\x02\xff")  # looks like a start of an answer, never ends right
                    await asyncio.sleep(0.001)

            task = asyncio.create_task(babble())
            t0 = time.monotonic()
            try:
                await client.read(7, 3, 0, 1, 0.05)
            except DeviceError:
                pass
            elapsed = time.monotonic() - t0
            stop.set()
            await task
        return elapsed

    assert asyncio.run(main()) < 2.0
