"""Modbus TCP pipelining: several transactions in flight on one connection, matched by transaction id.

The MBAP header's transaction id exists so a client may send a request before the previous answer
came back; a server answers each with its id, in any order (Modbus Messaging on TCP/IP
Implementation Guide V1.0b, modbus.org, 3.1.3 and 4.2). Gateways accept a configured number of
outstanding requests per connection; above it they queue, refuse or drop, so the number is a
site setting (``max_outstanding`` on a ``tcp`` line), 1 by default.

Requests made in the same turn of the event loop leave in one write (one system call, one TCP
segment), as the answers that woke their senders mostly arrived in one read: on a loaded machine,
every system call that wakes the gateway's side may cost the agent its core.

One reader task owns the connection's input: it decodes every answer and hands it to the request
waiting for that id. An answer nobody waits for (late after a timeout, or a wrong id) is counted and
dropped; a malformed header means the stream lost its frame boundaries, so every request in flight
fails with :class:`FrameError` and the buffered input is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from drivers.modbus.mbap import HEADER_LEN, MbapFramer
from drivers.transports.base import Transport, with_timeout
from kernel.errors import DeviceTimeout, FrameError, TransportClosed, TransportError

MAX_OUTSTANDING = 32
IDLE_READ_S = 1.0  # the reader's wait for the next header; a timeout only means nothing was asked
BODY_S = 0.5  # a header's PDU arrives right behind it (one TCP segment from a real gateway)


class MbapPipeline:
    """Up to ``max_outstanding`` Modbus TCP transactions in flight on ``transport`` (open it first)."""

    def __init__(
        self, transport: Transport, max_outstanding: int, count_stale: Callable[[float], None] | None = None
    ) -> None:
        if not 1 <= max_outstanding <= MAX_OUTSTANDING:
            raise ValueError(f"max_outstanding must be 1..{MAX_OUTSTANDING}, not {max_outstanding}")
        self.transport = transport
        self.max_outstanding = max_outstanding
        self.mbap = MbapFramer()
        self._slots = asyncio.Semaphore(max_outstanding)
        self._pending: dict[int, tuple[int, asyncio.Future[bytes]]] = {}
        self._failed: TransportError | None = None
        self.reader: asyncio.Task[None] | None = None
        self._out = bytearray()  # requests of this loop turn, sent together by _flush
        self._flushing = False
        self.writes = 0  # writes to the transport (each carrying one or more requests)
        self.stale = 0  # answers nobody waited for (late, or an unknown transaction id)
        self._count_stale = count_stale or (lambda n: None)
        self.resyncs = 0  # malformed headers after which the input was discarded

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered, failed or timed out."""
        return len(self._pending)

    def start(self) -> None:
        """Start the reader task (in the running loop)."""
        self.reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def stop(self) -> None:
        """Stop the reader; requests still in flight fail with :class:`TransportClosed`."""
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
            self.reader = None
        self._fail_all(TransportClosed(f"{self.transport.name}: pipeline stopped"))

    async def transact(self, unit: int, pdu: bytes, timeout: float) -> bytes:
        """Send ``pdu`` to ``unit`` once a slot is free; the answer's PDU, or :class:`DeviceTimeout`."""
        async with self._slots:
            if self._failed is not None:
                raise self._failed
            tid = self._free_tid()
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._pending[tid] = (unit, fut)
            try:
                self._send(self.mbap.frame(tid, unit, pdu))
                try:
                    return await with_timeout(fut, timeout)
                except asyncio.TimeoutError:
                    raise DeviceTimeout(
                        f"{self.transport.name}: no answer from unit {unit} within {timeout:.3f} s"
                    ) from None
            finally:
                self._pending.pop(tid, None)

    def _send(self, frame: bytes) -> None:
        if self.transport.closed:
            raise TransportClosed(f"{self.transport.name}: connection lost")
        self._out += frame
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if not self._out:
            return
        data = bytes(self._out)
        self._out.clear()
        self.writes += 1
        task = asyncio.ensure_future(self.transport.write(data))
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, TransportError):
            self._failed = exc
            self._fail_all(exc)
        elif exc is not None:  # the OS buffer did not drain (DeviceTimeout): these requests are lost
            self._fail_all(exc)

    def _free_tid(self) -> int:
        tid = self.mbap.next_tid()
        while tid in self._pending:  # at most MAX_OUTSTANDING ids are taken
            tid = self.mbap.next_tid()
        return tid

    async def _read_loop(self) -> None:
        t = self.transport
        try:
            while True:
                try:
                    head = await t.read_exactly(HEADER_LEN, IDLE_READ_S)
                except DeviceTimeout:
                    continue
                try:
                    h = self.mbap.header(head)
                    body = await t.read_exactly(h.pdu_len, BODY_S)
                except (FrameError, DeviceTimeout) as exc:
                    self._resync(FrameError(f"{t.name}: answer stream out of step ({exc})"))
                    continue
                entry = self._pending.get(h.tid)
                if entry is None or entry[1].done():
                    self.stale += 1
                    self._count_stale(1)
                    continue
                unit, fut = entry
                if h.unit != unit:
                    fut.set_exception(FrameError(f"answer from unit {h.unit} to a request for unit {unit}"))
                else:
                    fut.set_result(body)
        except TransportError as exc:
            self._failed = exc
            self._fail_all(exc)

    def _resync(self, exc: FrameError) -> None:
        self.resyncs += 1
        self.transport.reset_input()
        self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
