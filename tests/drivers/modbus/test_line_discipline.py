"""RS-485 line discipline: one transaction at a time, and the 3.5-character silence (plus the
configured extra) between the end of an answer and the next request."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.modbus import protocol as p
from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.transports import memory_pair
from kernel.sink import ListSink
from tests.drivers.modbus.helpers import context, make_profile, running

BAUD = 9600
CHAR = 10 / BAUD


@pytest.mark.parametrize("extra_ms", [0.0, 5.0])
def test_one_transaction_at_a_time_with_inter_frame_silence(extra_ms):
    gaps: list[float] = []
    overlaps = 0

    async def device_side(end) -> None:
        nonlocal overlaps
        answered_at = None
        buf = b""
        while True:
            buf += await end.read(256, 10.0)
            while len(buf) >= 8:
                frame, buf = buf[:8], buf[8:]
                now = time.monotonic()
                if buf:
                    overlaps += 1  # a second request arrived before this one was answered
                if answered_at is not None:
                    # The request's first byte left the master one request-time before it arrived here.
                    gaps.append(now - answered_at)
                unit, fc = frame[0], frame[1]
                count = int.from_bytes(frame[4:6], "big")
                if fc in (1, 2):
                    pdu = bytes([fc, (count + 7) // 8]) + bytes((count + 7) // 8)
                else:
                    pdu = bytes([fc, 2 * count]) + bytes(2 * count)
                await end.write(p.rtu_frame(unit, pdu))
                answered_at = time.monotonic()

    async def main():
        agent_end, dev_end = memory_pair(BAUD)
        await dev_end.open()
        task = asyncio.create_task(device_side(dev_end))
        devices = [
            ModbusDevice(make_profile(), DeviceSettings(name=f"d{u}", unit=u, fast_s=0.01, slow_s=0.05))
            for u in (1, 2, 3)
        ]
        bus = ModbusBus("line", agent_end, devices, "rtu", extra_silence_s=extra_ms / 1000)
        async with running(bus, context(ListSink())):
            await asyncio.sleep(1.5)
        task.cancel()

    asyncio.run(main())
    assert overlaps == 0
    assert len(gaps) > 20
    need = 3.5 * CHAR + extra_ms / 1000
    assert min(gaps) >= need - 0.0005, (min(gaps), need)
