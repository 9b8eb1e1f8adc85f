"""A Modbus master over a transport: one transaction at a time, RTU or TCP framing.

RTU: before each request the line must have been silent for 3.5 character times (1.75 ms above
19200 baud, as the serial-line specification allows) plus ``extra_silence_s``; the response
deadline allows for the request's and the response's time on the wire. TCP: MBAP header with a
transaction id; stale answers to an earlier, timed-out request are skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Literal

from drivers.modbus import protocol as p
from drivers.modbus.mbap import HEADER_LEN, MbapFramer
from drivers.modbus.pipeline import MbapPipeline
from drivers.transports.base import Transport
from kernel.errors import DeviceTimeout, FrameError

Framing = Literal["rtu", "tcp"]


def silence_s(transport: Transport) -> float:
    """The inter-frame silence (t3.5) of the transport's line; 0 without a serial line."""
    if not transport.baudrate:
        return 0.0
    if transport.baudrate > 19200:
        return 0.00175
    return 3.5 * transport.char_time()


class ModbusClient:
    """Sends requests and returns response PDUs; callers serialise access (the bus scheduler does),
    except while a Modbus TCP :attr:`pipeline` is set: then it matches answers to requests itself."""

    def __init__(self, transport: Transport, framing: Framing = "rtu", extra_silence_s: float = 0.0) -> None:
        self.transport = transport
        self.framing = framing
        self.extra_silence_s = extra_silence_s
        self.mbap = MbapFramer()
        self._last_tx_end = 0.0
        self.stray_bytes = 0
        self.foreign_frames = 0
        self.pipeline: MbapPipeline | None = None

    # -- high level -------------------------------------------------------------------------
    async def read(
        self, unit: int, fc: int, address: int, count: int, timeout: float
    ) -> list[int] | list[bool]:
        """Read ``count`` registers or bits with function ``fc``."""
        req = p.read_request(fc, address, count)
        resp_len = 2 + ((count + 7) // 8 if fc in (1, 2) else 2 * count)
        return p.parse_response(req, await self.transact(unit, req, timeout, resp_len))

    async def write_coil(self, unit: int, address: int, value: bool, timeout: float) -> None:
        """Write one coil (function 5)."""
        req = p.write_coil_request(address, value)
        p.parse_response(req, await self.transact(unit, req, timeout, 5))

    async def write_registers(self, unit: int, address: int, values: Sequence[int], timeout: float) -> None:
        """Write holding registers (function 6 for one, 16 for several)."""
        if len(values) == 1:
            req = p.write_register_request(address, values[0])
        else:
            req = p.write_registers_request(address, values)
        p.parse_response(req, await self.transact(unit, req, timeout, 5))

    # -- framing ----------------------------------------------------------------------------
    async def transact(self, unit: int, pdu: bytes, timeout: float, expect_pdu_len: int = 5) -> bytes:
        """Send ``pdu`` to ``unit``; return the response PDU (exception responses included)."""
        if self.framing == "tcp":
            return await self._tcp(unit, pdu, timeout)
        return await self._rtu(unit, pdu, timeout, expect_pdu_len)

    async def _rtu(self, unit: int, pdu: bytes, timeout: float, expect_pdu_len: int) -> bytes:
        t = self.transport
        char = t.char_time()
        gap = silence_s(t) + self.extra_silence_s
        quiet_since = max(self._last_tx_end, t.last_rx)
        wait = quiet_since + gap - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.stray_bytes += t.reset_input()
        frame = p.rtu_frame(unit, pdu)
        await t.write(frame)
        sent = time.monotonic()
        self._last_tx_end = sent + len(frame) * char
        # The answer may take: our request on the wire, the device's turnaround (timeout), its answer.
        deadline = self._last_tx_end + timeout + (expect_pdu_len + 3) * char
        other_units = 0
        try:
            while True:
                head = await t.read_exactly(3, max(deadline - time.monotonic(), 0.0))
                total = p.rtu_response_length(head)
                if total is None:
                    raise FrameError(f"unexpected function {head[1]} in answer to function {pdu[0]}")
                rest = await t.read_exactly(total - 3, max(deadline - time.monotonic(), 0.0) + 4 * char)
                frame_in = head + rest
                p.check_crc(frame_in)
                if head[0] != unit:
                    # A late answer from another device (or a device answering as the wrong unit):
                    # discard it and keep listening for ours until the deadline.
                    other_units += 1
                    self.foreign_frames += 1
                    continue
                if head[1] & 0x7F != pdu[0]:
                    raise FrameError(f"unexpected function {head[1]} in answer to function {pdu[0]}")
                break
        except FrameError:
            await self._drain(gap)
            raise
        except DeviceTimeout:
            self.stray_bytes += t.reset_input()
            if other_units:
                raise FrameError(f"only answers from other units than {unit} within the timeout") from None
            raise
        return frame_in[1:-2]

    async def _drain(self, gap: float, limit_s: float = 0.5) -> None:
        """After a bad frame, wait for the line to go quiet and discard what came.

        Gives up after ``limit_s`` so a babbling device cannot hold the bus; the next request
        discards whatever is still buffered anyway.
        """
        t = self.transport
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            self.stray_bytes += t.reset_input()
            await asyncio.sleep(max(gap, 0.002))
            if not t.pending():
                return

    async def _tcp(self, unit: int, pdu: bytes, timeout: float) -> bytes:
        if self.pipeline is not None:
            return await self.pipeline.transact(unit, pdu, timeout)
        t = self.transport
        self.stray_bytes += t.reset_input()
        tid = self.mbap.next_tid()
        await t.write(self.mbap.frame(tid, unit, pdu))
        deadline = time.monotonic() + timeout
        while True:
            head = await t.read_exactly(HEADER_LEN, max(deadline - time.monotonic(), 0.0))
            try:
                h = self.mbap.header(head)
            except FrameError:
                await self._drain(0.005)
                raise
            body = await t.read_exactly(h.pdu_len, max(deadline - time.monotonic(), 0.0) + 0.05)
            if h.tid != tid:
                continue  # a late answer to an earlier request
            if h.unit != unit:
                raise FrameError(f"answer from unit {h.unit} to a request for unit {unit}")
            return body
