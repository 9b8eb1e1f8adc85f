"""One Modbus unit on a transport: the async link that lighting, meters, lux sensors and signal
controllers all use (over the project's :class:`~drivers.modbus.client.ModbusClient`).

The link opens its transport on first use, runs one transaction at a time, and closes the transport
after a transport or framing error so the next call reconnects (a rebooted gateway comes back).
A synchronous owner (the traffic intersection's thread) drives it through
:class:`drivers.signals.modbus.ThreadLink`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from drivers.modbus.client import Framing, ModbusClient
from drivers.transports.base import Transport
from drivers.transports.tcp import TcpTransport
from kernel.errors import FrameError, TransportError

T = TypeVar("T")


class ModbusLink:
    """A unit on a Modbus transport, with reconnect on failure."""

    def __init__(self, transport: Transport, unit: int, timeout_s: float, framing: Framing = "tcp") -> None:
        self.transport = transport
        self.unit = unit
        self.timeout_s = timeout_s
        self.client = ModbusClient(transport, framing)
        self._lock = asyncio.Lock()

    @classmethod
    def tcp(cls, host: str, port: int, unit: int, timeout_s: float) -> ModbusLink:
        """A Modbus TCP device at ``host:port``."""
        return cls(TcpTransport(host, port, connect_timeout=timeout_s), unit, timeout_s)

    async def _run(self, fn: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            try:
                if self.transport.closed:
                    await self.transport.open()
                return await fn()
            except (TransportError, FrameError):
                await self.transport.close()
                raise

    async def read(self, fc: int, address: int, count: int) -> list[int] | list[bool]:
        """Read registers (fc 3, 4) or bits (fc 1, 2)."""
        out = await self._run(lambda: self.client.read(self.unit, fc, address, count, self.timeout_s))
        if len(out) != count:
            raise FrameError(f"{self.transport.name}: asked {count} values, got {len(out)}")
        return out

    async def write_coil(self, address: int, value: bool) -> None:
        """Write one coil."""
        await self._run(lambda: self.client.write_coil(self.unit, address, value, self.timeout_s))

    async def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers."""
        await self._run(lambda: self.client.write_registers(self.unit, address, values, self.timeout_s))

    async def close(self) -> None:
        """Close the transport."""
        await self.transport.close()
