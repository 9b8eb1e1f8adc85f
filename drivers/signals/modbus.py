"""A traffic-signal controller on Modbus TCP (register map in :mod:`drivers.signals.emulator`).

The driver is given a register link (it opens no socket itself): anything with
``write_registers(address, values)`` and ``read_input_registers(address, count)`` that raises
:class:`~agent.errors.TransportError` or :class:`~agent.errors.DeviceError` on failure.
:class:`PymodbusTcpLink` is that link over pymodbus' synchronous TCP client.
"""

from __future__ import annotations

from typing import Protocol

from agent.errors import DeviceError, DeviceRefused, DeviceTimeout, FrameError, TransportError
from agent.traffic.signals import SignalState
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


class PymodbusTcpLink:
    """A :class:`RegisterLink` over pymodbus' ModbusTcpClient (short timeout, no retries)."""

    def __init__(self, host: str, port: int, unit: int = 1, timeout_s: float = 0.3) -> None:
        from pymodbus.client import ModbusTcpClient

        self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        self._unit = unit
        self._where = f"modbus://{host}:{port}/{unit}"

    def _ensure(self) -> None:
        if not self._client.connected and not self._client.connect():
            raise TransportError(f"{self._where}: cannot connect")

    def write_registers(self, address: int, values: list[int]) -> None:
        """Write holding registers."""
        self._call(lambda: self._client.write_registers(address, values, device_id=self._unit))

    def read_input_registers(self, address: int, count: int) -> list[int]:
        """Read input registers."""
        rr = self._call(lambda: self._client.read_input_registers(address, count=count, device_id=self._unit))
        regs = list(rr.registers)
        if len(regs) != count:
            raise FrameError(f"{self._where}: asked {count} registers, got {len(regs)}")
        return regs

    def close(self) -> None:
        """Close the socket."""
        self._client.close()

    def _call(self, fn):  # type: ignore[no-untyped-def]
        from pymodbus.exceptions import ConnectionException, ModbusIOException
        from pymodbus.exceptions import ModbusException as PymodbusError

        self._ensure()
        try:
            rr = fn()
        except ConnectionException as exc:
            self._client.close()
            raise TransportError(f"{self._where}: {exc}") from exc
        except ModbusIOException as exc:
            self._client.close()
            raise DeviceTimeout(f"{self._where}: no answer ({exc})") from exc
        except PymodbusError as exc:
            self._client.close()
            raise DeviceError(f"{self._where}: {exc}") from exc
        if rr.isError():
            raise DeviceRefused(
                f"{self._where}: exception response {rr}", getattr(rr, "exception_code", None)
            )
        return rr


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
