"""A traffic-signal controller on Modbus TCP (register map in :mod:`drivers.signals.emulator`).

The driver is given a register link (it opens no socket itself): anything with
``write_registers(address, values)`` and ``read_input_registers(address, count)`` that raises
:class:`~kernel.errors.TransportError` or :class:`~kernel.errors.DeviceError` on failure.
:class:`ThreadLink` is that link for the intersection's own thread, over the project's one async
:class:`~drivers.modbus.link.ModbusLink` (the same one lighting and meters use).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from drivers.modbus.link import ModbusLink
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
from drivers.transports.tcp import TcpTransport
from kernel.errors import FrameError, TransportError

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


class ThreadLink:
    """A :class:`RegisterLink` for a synchronous owner thread, over the one async :class:`ModbusLink`.

    The signal envelope is synchronous and runs in its intersection's own thread, so that thread
    runs the link's coroutines on an event loop of its own. Called from a thread whose event loop is
    running (the agent's loop, a command handler), it refuses with a :class:`TransportError` instead
    of nesting loops: work for the output is handed to the owner thread. :meth:`close` releases the
    connection and the loop; the next call (a restarted owner) opens new ones.
    """

    def __init__(self, link: ModbusLink) -> None:
        self.link = link
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def tcp(cls, host: str, port: int, unit: int = 1, timeout_s: float = 0.3) -> ThreadLink:
        """A signal controller on Modbus TCP at ``host:port``."""
        return cls(ModbusLink(TcpTransport(host, port, connect_timeout=timeout_s), unit, timeout_s))

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise TransportError(
                f"{self.link.transport.name}: called from a running event loop; hand it to the owner thread"
            )
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(make())

    def write_registers(self, address: int, values: list[int]) -> None:
        """Write holding registers (function 16)."""
        self._run(lambda: self.link.write_registers(address, values))

    def read_input_registers(self, address: int, count: int) -> list[int]:
        """Read input registers (function 4)."""
        return [int(r) for r in self._run(lambda: self.link.read(4, address, count))]

    def close(self) -> None:
        """Close the connection and the owner's loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self.link.close())
            self._loop.close()
        self._loop = None


class ModbusSignalController:
    """Signal output on a Modbus controller: one write per state, read-back of the shown channels."""

    def __init__(self, groups: tuple[str, ...], link: RegisterLink, buttons: int = 0) -> None:
        self.groups = groups
        self._link = link
        self.buttons = buttons
        self._seq = 0

    def write(self, state: SignalState, seq: int) -> None:
        """Write seq, run, and every channel's code in one request."""
        self._seq = seq
        self._link.write_registers(HR_SEQ, [seq, CONTROL_RUN, *(CODES[state[g]] for g in self.groups)])

    def read_back(self) -> ShownState:
        """Read the sequence echo, status, fault and the shown codes."""
        n = len(self.groups)
        regs = self._link.read_input_registers(IR_SEQ, IR_CHANNELS + n + (1 if self.buttons else 0))
        seq, status, fault_no = regs[0], regs[1], regs[2]
        codes = regs[IR_CHANNELS : IR_CHANNELS + n]
        mask = regs[IR_CHANNELS + n] if self.buttons and len(regs) > IR_CHANNELS + n else 0
        calls = tuple(i for i in range(self.buttons) if mask >> i & 1)
        if not all(c in FROM_CODE for c in codes):
            raise FrameError(f"signal controller returned an unknown indication code in {codes}")
        shown = dict(zip(self.groups, map(FROM_CODE.__getitem__, codes), strict=True))
        fault = None
        if status:
            fault = FAULT_KINDS[fault_no] if 0 < fault_no < len(FAULT_KINDS) else f"fault {fault_no}"
            fault = fault or "flashing"
        return ShownState(shown, seq, fault, calls)

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
