"""A traffic-signal controller on Modbus TCP (register map in :mod:`drivers.signals.emulator`).

The driver is given a register link (it opens no socket itself): anything with
``write_registers(address, values)`` and ``read_input_registers(address, count)`` that raises
:class:`~kernel.errors.TransportError` or :class:`~kernel.errors.DeviceError` on failure.
:class:`TransportRegisterLink` is that link over a :mod:`drivers.transports` transport and the
project's Modbus client (TCP or RTU framing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from drivers.modbus.client import Framing, ModbusClient
from drivers.signals.base import CODES, FROM_CODE, ShownState
from drivers.signals.emulator import (
    CONTROL_FLASH,
    CONTROL_RESET,
    CONTROL_RUN,
    FAULT_KINDS,
    HR_SEQ,
    IR_CHANNELS,
    IR_SEQ,
)
from drivers.signals.indications import SignalState
from drivers.transports.base import Transport
from kernel.errors import DeviceTimeout, FrameError, TransportError

T = TypeVar("T")


class RegisterLink(Protocol):
    """Register-level access to one Modbus unit."""

    def write_registers(self, address: int, values: list[int]) -> None:
        """Write holding registers (function 16)."""
        ...

    def read_input_registers(self, address: int, count: int) -> list[int]:
        """Read input registers (function 4)."""
        ...

    def close(self) -> None:
        """Drop the connection."""
        ...


class TransportRegisterLink:
    """A :class:`RegisterLink` over the project's transport layer and Modbus client.

    The signal envelope is synchronous, so the async :class:`~drivers.modbus.client.ModbusClient`
    runs on a private event loop; calls must not overlap (the intersection's lock serialises them).
    A lost connection is reopened on the next call.
    """

    def __init__(
        self, transport: Transport, unit: int = 1, timeout_s: float = 0.3, framing: Framing = "tcp"
    ) -> None:
        self._transport = transport
        self._client = ModbusClient(transport, framing)
        self._unit = unit
        self._timeout = timeout_s
        self._loop = asyncio.new_event_loop()

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            if self._transport.closed:
                await self._transport.open()
            try:
                return await asyncio.wait_for(make(), self._timeout * 2)
            except asyncio.TimeoutError as exc:
                raise DeviceTimeout(f"{self._transport.name}: no answer in {self._timeout} s") from exc

        if self._loop.is_closed():
            raise TransportError(f"{self._transport.name}: link is closed")
        return self._loop.run_until_complete(call())

    def write_registers(self, address: int, values: list[int]) -> None:
        """Write holding registers (function 16)."""
        self._run(lambda: self._client.write_registers(self._unit, address, values, self._timeout))

    def read_input_registers(self, address: int, count: int) -> list[int]:
        """Read input registers (function 4)."""
        regs = self._run(lambda: self._client.read(self._unit, 4, address, count, self._timeout))
        if len(regs) != count:
            raise FrameError(f"{self._transport.name}: asked {count} registers, got {len(regs)}")
        return [int(r) for r in regs]

    def close(self) -> None:
        """Close the transport and the private loop."""
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._transport.close())
            self._loop.close()


class ModbusSignalController:
    """Signal output on a Modbus controller: one write per state, read-back of the shown channels."""

    def __init__(self, groups: tuple[str, ...], link: RegisterLink) -> None:
        self.groups = groups
        self._link = link
        self._seq = 0

    def write(self, state: SignalState, seq: int) -> None:
        """Write seq, run, and every channel's code in one request."""
        self._seq = seq
        self._link.write_registers(HR_SEQ, [seq, CONTROL_RUN, *(CODES[state[g]] for g in self.groups)])

    def read_back(self) -> ShownState:
        """Read the sequence echo, status, fault and the shown codes."""
        regs = self._link.read_input_registers(IR_SEQ, IR_CHANNELS + len(self.groups))
        seq, status, fault_no = regs[0], regs[1], regs[2]
        codes = regs[IR_CHANNELS:]
        if not all(c in FROM_CODE for c in codes):
            raise FrameError(f"signal controller returned an unknown indication code in {codes}")
        shown = dict(zip(self.groups, map(FROM_CODE.__getitem__, codes), strict=True))
        fault = None
        if status:
            fault = FAULT_KINDS[fault_no] if 0 < fault_no < len(FAULT_KINDS) else f"fault {fault_no}"
            fault = fault or "flashing"
        return ShownState(shown, seq, fault)

    def flash(self) -> None:
        """Ask the controller to flash (latched there too)."""
        self._seq = (self._seq + 1) & 0xFFFF
        self._link.write_registers(HR_SEQ, [self._seq, CONTROL_FLASH])

    def reset(self) -> None:
        """Operator reset of the controller's latched flash."""
        self._seq = (self._seq + 1) & 0xFFFF
        self._link.write_registers(HR_SEQ, [self._seq, CONTROL_RESET])

    def close(self) -> None:
        """Close the link."""
        self._link.close()
