"""A TCP client transport (Modbus TCP device, or an RS-485 gateway for RTU over TCP)."""

from __future__ import annotations

import asyncio

from drivers.transports.base import Transport, with_timeout
from kernel.errors import TransportError


class _Proto(asyncio.Protocol):
    def __init__(self, owner: TcpTransport) -> None:
        self.owner = owner
        self.can_write = asyncio.Event()
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.owner._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        self.owner._lost()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()


class TcpTransport(Transport):
    """Connects to ``host:port``. For RTU over TCP set ``baudrate`` to the serial line behind the gateway."""

    def __init__(
        self, host: str, port: int, connect_timeout: float = 3.0, baudrate: int | None = None
    ) -> None:
        super().__init__()
        self.name = f"tcp:{host}:{port}"
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.baudrate = baudrate
        self._tr: asyncio.Transport | None = None
        self._proto: _Proto | None = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            tr, proto = await with_timeout(
                loop.create_connection(lambda: _Proto(self), self.host, self.port), self.connect_timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise TransportError(f"{self.name}: cannot connect: {exc or 'timeout'}") from exc
        self._tr, self._proto = tr, proto

    async def _close(self) -> None:
        if self._tr is not None:
            self._tr.close()
            self._tr = None

    async def _write(self, data: bytes, timeout: float) -> None:
        if self._tr is None or self._proto is None or self._tr.is_closing():
            raise TransportError(f"{self.name}: connection lost")
        self._tr.write(data)
        if not self._proto.can_write.is_set():
            await self._wait_writable(self._proto.can_write.wait(), timeout)
