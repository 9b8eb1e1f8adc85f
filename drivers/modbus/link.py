"""Modbus units on a transport: the one async link that bus schedulers, lighting outputs, meters,
lux sensors and signal controllers all use (over the project's :class:`~drivers.modbus.client.ModbusClient`).

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
    """Modbus units on one transport: a default unit and timeout, overridable per call.

    With ``owns_transport`` (lighting, meters, signals) the link opens the transport on first use
    and closes it after a transport or framing error so the next call reconnects. A bus scheduler
    that reopens its line itself, with backoff, passes ``owns_transport=False`` and the link only
    frames and serialises transactions.
    """

    def __init__(
        self,
        transport: Transport,
        unit: int = 1,
        timeout_s: float = 1.0,
        framing: Framing = "tcp",
        extra_silence_s: float = 0.0,
        owns_transport: bool = True,
    ) -> None:
        self.transport = transport
        self.unit = unit
        self.timeout_s = timeout_s
        self.client = ModbusClient(transport, framing, extra_silence_s)
        self.owns_transport = owns_transport
        self._lock = asyncio.Lock()

    @classmethod
    def tcp(cls, host: str, port: int, unit: int, timeout_s: float) -> ModbusLink:
        """A Modbus TCP device at ``host:port``."""
        return cls(TcpTransport(host, port, connect_timeout=timeout_s), unit, timeout_s)

    async def _run(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self.client.pipeline is not None:
            return await fn()  # the pipeline bounds and matches transactions itself
        async with self._lock:
            if not self.owns_transport:
                return await fn()
            try:
                if self.transport.closed:
                    await self.transport.open()
                return await fn()
            except (TransportError, FrameError):
                await self.transport.close()
                raise

    async def read(
        self, fc: int, address: int, count: int, *, unit: int | None = None, timeout_s: float | None = None
    ) -> list[int] | list[bool]:
        """Read registers (fc 3, 4) or bits (fc 1, 2)."""
        u, t = self.unit if unit is None else unit, self.timeout_s if timeout_s is None else timeout_s
        out = await self._run(lambda: self.client.read(u, fc, address, count, t))
        if len(out) != count:
            raise FrameError(f"{self.transport.name}: asked {count} values, got {len(out)}")
        return out

    async def write_coil(
        self, address: int, value: bool, *, unit: int | None = None, timeout_s: float | None = None
    ) -> None:
        """Write one coil."""
        u, t = self.unit if unit is None else unit, self.timeout_s if timeout_s is None else timeout_s
        await self._run(lambda: self.client.write_coil(u, address, value, t))

    async def write_registers(
        self, address: int, values: Sequence[int], *, unit: int | None = None, timeout_s: float | None = None
    ) -> None:
        """Write holding registers."""
        u, t = self.unit if unit is None else unit, self.timeout_s if timeout_s is None else timeout_s
        await self._run(lambda: self.client.write_registers(u, address, values, t))

    async def close(self) -> None:
        """Close the transport (when the link owns it)."""
        if self.owns_transport:
            await self.transport.close()
