"""What the running agent calls on a line section: the bus it names (``key()``) and its transport
(``build()``). Shared by the pydantic models of :mod:`drivers.transports.config` and the plain runtime
types of :mod:`agent.runconfig`; nothing here imports pydantic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from drivers.transports.base import Transport
from drivers.transports.fd import PtyTransport
from drivers.transports.serial import SerialTransport
from drivers.transports.tcp import TcpTransport

if TYPE_CHECKING:
    from typing import Protocol

    class _Typed(Protocol):
        @property
        def type(self) -> str: ...


class SerialLineMethods:
    """An RS-485 adapter."""

    __slots__ = ()
    if TYPE_CHECKING:
        port: str
        baudrate: int
        parity: Literal["N", "E", "O"]
        stopbits: Literal[1, 2]

    def key(self) -> str:
        """What identifies the physical bus."""
        return f"serial:{self.port}"

    def build(self) -> Transport:
        """The transport for this line."""
        return SerialTransport(self.port, self.baudrate, self.parity, self.stopbits)


class PtyLineMethods:
    """A pseudo-terminal standing in for an RS-485 line."""

    __slots__ = ()
    if TYPE_CHECKING:
        path: str
        baudrate: int
        parity: Literal["N", "E", "O"]
        stopbits: Literal[1, 2]

    def key(self) -> str:
        """What identifies the physical bus."""
        return f"pty:{self.path}"

    def build(self) -> Transport:
        """The transport for this line."""
        return PtyTransport(self.path, self.baudrate, 1 + 8 + (self.parity != "N") + self.stopbits)


class TcpLineMethods:
    """A Modbus TCP device or gateway."""

    __slots__ = ()
    if TYPE_CHECKING:
        host: str
        port: int
        connect_timeout_s: float

    def key(self) -> str:
        """What identifies the physical bus."""
        return f"tcp:{self.host}:{self.port}"

    def build(self) -> Transport:
        """The transport for this line."""
        return TcpTransport(self.host, self.port, self.connect_timeout_s)


class RtuOverTcpLineMethods:
    """An RS-485 line behind a serial-to-TCP gateway."""

    __slots__ = ()
    if TYPE_CHECKING:
        host: str
        port: int
        baudrate: int
        connect_timeout_s: float

    def key(self) -> str:
        """What identifies the physical bus."""
        return f"rtu-over-tcp:{self.host}:{self.port}"

    def build(self) -> Transport:
        """The transport for this line."""
        return TcpTransport(self.host, self.port, self.connect_timeout_s, baudrate=self.baudrate)


def framing_of(line: _Typed) -> Literal["rtu", "tcp"]:
    """``tcp`` (MBAP) for Modbus TCP, ``rtu`` (CRC frames) for everything else."""
    return "tcp" if line.type == "tcp" else "rtu"
