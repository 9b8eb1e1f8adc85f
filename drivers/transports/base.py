"""The Transport contract: an async byte stream that a driver is handed (it never opens ports itself).

Every transport buffers what arrives in a bounded buffer; ``read`` waits for bytes with a timeout.
``baudrate`` and ``bits_per_char`` describe the line's timing when there is a serial line behind it
(serial port, pty standing in for one, RTU-over-TCP gateway); they are ``None``/10 for plain TCP.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from types import TracebackType
from typing import TypeVar

from kernel.errors import DeviceTimeout, TransportClosed

# What may wait in a transport's input buffer before the oldest bytes are dropped (counted).
MAX_BUFFER = 64 * 1024
T = TypeVar("T")


async def with_timeout(coro: Awaitable[T], timeout: float) -> T:
    """Like ``asyncio.wait_for`` but never loses a cancellation (Python 3.10/3.11 ``wait_for`` can
    swallow one when the inner operation finishes at the same moment). Raises ``asyncio.TimeoutError``.
    """
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise asyncio.TimeoutError
    return task.result()


def _settle(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


class Transport(ABC):
    """An async byte stream with timeouts: open/close/read/write, ``closed``, async context manager."""

    name: str = "transport"
    baudrate: int | None = None
    bits_per_char: int = 10

    def __init__(self) -> None:
        self._buf = bytearray()
        self._waiter: asyncio.Future[bool] | None = None
        self._closed = True
        self._eof = False
        self.dropped_bytes = 0
        self.last_rx = 0.0  # monotonic time of the last byte received

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True before ``open`` and after ``close`` or a lost connection."""
        return self._closed

    async def open(self) -> None:
        """Open the underlying port or connection (idempotent)."""
        if not self._closed:
            return
        self._buf.clear()
        self._eof = False
        await self._open()
        self._closed = False

    async def close(self) -> None:
        """Close (idempotent); pending reads fail with :class:`TransportClosed`."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        await self._close()

    async def __aenter__(self) -> Transport:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- io ----------------------------------------------------------------------------------
    def char_time(self) -> float:
        """Seconds one character takes on the line (0 when there is no serial line)."""
        return self.bits_per_char / self.baudrate if self.baudrate else 0.0

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed(f"{self.name}: transport is closed")

    def _feed(self, data: bytes) -> None:
        """Called by implementations when bytes arrive."""
        if not data:
            return
        self._buf += data
        if len(self._buf) > MAX_BUFFER:
            extra = len(self._buf) - MAX_BUFFER
            del self._buf[:extra]
            self.dropped_bytes += extra
        self.last_rx = time.monotonic()
        self._wake()

    def _lost(self) -> None:
        """Called by implementations when the peer went away."""
        self._eof = True
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _settle(self._waiter, True)

    async def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes (at least one); :class:`DeviceTimeout` if none arrive within ``timeout``."""
        self._check_open()
        if not self._buf:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[bool] = loop.create_future()
            self._waiter = waiter
            timer = loop.call_later(timeout, _settle, waiter, False)
            try:
                woken = await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not woken:
                raise DeviceTimeout(f"{self.name}: no data within {timeout:.3f} s")
            if not self._buf:
                what = "connection lost" if self._eof else "closed"
                raise TransportClosed(f"{self.name}: {what}")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def read_exactly(self, n: int, timeout: float) -> bytes:
        """Exactly ``n`` bytes within ``timeout`` seconds overall, or :class:`DeviceTimeout`."""
        deadline = time.monotonic() + timeout
        out = bytearray()
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not self._buf:
                raise DeviceTimeout(f"{self.name}: {len(out)} of {n} bytes within {timeout:.3f} s")
            out += await self.read(n - len(out), max(remaining, 0.0))
        return bytes(out)

    def pending(self) -> int:
        """Bytes waiting in the input buffer."""
        return len(self._buf)

    def reset_input(self) -> int:
        """Discard buffered input (stray bytes after an error); returns how many were dropped."""
        n = len(self._buf)
        self._buf.clear()
        return n

    async def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Send ``data``; waits for the OS buffer to drain at most ``timeout`` seconds."""
        self._check_open()
        await self._write(data, timeout)

    # -- for implementations -------------------------------------------------------------
    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _write(self, data: bytes, timeout: float) -> None:
        """Send ``data``; raise :class:`DeviceTimeout` if the OS buffer does not drain within ``timeout``."""

    async def _wait_writable(self, ready: Awaitable[object], timeout: float) -> None:
        try:
            await with_timeout(ready, timeout)
        except asyncio.TimeoutError:
            raise DeviceTimeout(f"{self.name}: write did not complete within {timeout:.3f} s") from None
