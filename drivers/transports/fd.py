"""Transports over a file descriptor (serial port, pseudo-terminal) driven by the event loop."""

from __future__ import annotations

import asyncio
import errno
import os
import termios
import tty

from drivers.transports.base import Transport
from kernel.errors import TransportError


class FdTransport(Transport):
    """A transport on a non-blocking file descriptor, read through ``loop.add_reader`` (no threads)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._fd: int | None = None
        self._writable: asyncio.Event | None = None

    def _attach(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._on_readable)

    def _detach(self) -> int | None:
        fd, self._fd = self._fd, None
        if fd is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        return fd

    def _on_readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO on a pty master means the other side closed: treat as a lost connection.
            if exc.errno not in (errno.EIO, errno.EBADF):
                raise
            data = b""
        if not data:
            self._detach()
            self._lost()
            return
        self._feed(data)

    async def _write(self, data: bytes, timeout: float) -> None:
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            if self._fd is None:
                raise TransportError(f"{self.name}: closed while writing")
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise TransportError(f"{self.name}: write failed: {exc.strerror}") from exc
            view = view[n:]
            if view:
                ready = asyncio.Event()
                loop.add_writer(self._fd, ready.set)
                try:
                    await self._wait_writable(ready.wait(), timeout)
                finally:
                    if self._fd is not None:
                        loop.remove_writer(self._fd)


def set_raw(fd: int) -> None:
    """Put a tty in raw mode (no echo, no line editing, no CR/LF translation)."""
    tty.setraw(fd, termios.TCSANOW)


class PtyTransport(FdTransport):
    """Opens an existing pseudo-terminal (or any tty path) in raw mode.

    A pty has no real baud rate; ``baudrate`` is the nominal rate of the line it stands in for,
    used for inter-frame timing.
    """

    def __init__(self, path: str, baudrate: int | None = 9600, bits_per_char: int = 10) -> None:
        super().__init__(f"pty:{path}")
        self.path = path
        self.baudrate = baudrate
        self.bits_per_char = bits_per_char

    async def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot open: {exc.strerror}") from exc
        set_raw(fd)
        self._attach(fd)

    async def _close(self) -> None:
        fd = self._detach()
        if fd is not None:
            os.close(fd)


class PtyPair:
    """A pseudo-terminal pair for emulators: ``master`` is a transport, ``path`` is the device to open.

    The pair keeps its own handle on the slave side so that the master never sees EIO while the
    agent closes and reopens the port (as a real RS-485 line stays powered across reconnects).
    """

    def __init__(self, baudrate: int | None = 9600) -> None:
        self._master_fd, self._slave_fd = os.openpty()
        set_raw(self._slave_fd)
        set_raw(self._master_fd)
        self.path = os.ttyname(self._slave_fd)
        self.master = _MasterTransport(self._master_fd, self.path, baudrate)

    def close(self) -> None:
        """Release the slave handle (the master transport is closed separately)."""
        if self._slave_fd >= 0:
            os.close(self._slave_fd)
            self._slave_fd = -1


class _MasterTransport(FdTransport):
    def __init__(self, fd: int, path: str, baudrate: int | None) -> None:
        super().__init__(f"pty-master:{path}")
        self._master = fd
        self.baudrate = baudrate

    async def _open(self) -> None:
        self._attach(self._master)

    async def _close(self) -> None:
        fd = self._detach()
        if fd is not None:
            os.close(fd)
