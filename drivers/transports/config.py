"""Line sections of the site config, and the transport each one builds.

``serial`` is an RS-485 adapter, ``pty`` a pseudo-terminal standing in for one (emulators, HIL),
``tcp`` a Modbus TCP device or gateway, ``rtu-over-tcp`` raw RTU frames through a serial gateway.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from drivers.transports.base import Transport
from drivers.transports.fd import PtyTransport
from drivers.transports.serial import SerialTransport
from drivers.transports.tcp import TcpTransport
from kernel.config_base import StrictModel

BAUD_RATES = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200)


class SerialLine(StrictModel):
    """An RS-485 adapter."""

    type: Literal["serial"]
    port: str = Field(min_length=1, description="For example /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(
        default=9600, ge=50, le=4_000_000, description="One of the usual rates (1200 to 115200)."
    )
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1

    def key(self) -> str:
        """What identifies the physical bus."""
        return f"serial:{self.port}"

    def build(self) -> Transport:
        """The transport for this line."""
        return SerialTransport(self.port, self.baudrate, self.parity, self.stopbits)


class PtyLine(StrictModel):
    """A pseudo-terminal standing in for an RS-485 line (emulators, HIL rigs)."""

    type: Literal["pty"]
    path: str = Field(min_length=1)
    baudrate: int = Field(default=9600, ge=50, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1

    def key(self) -> str:
        """What identifies the physical bus."""
        return f"pty:{self.path}"

    def build(self) -> Transport:
        """The transport for this line."""
        return PtyTransport(self.path, self.baudrate, 1 + 8 + (self.parity != "N") + self.stopbits)


class TcpLine(StrictModel):
    """A Modbus TCP device or TCP gateway (MBAP framing)."""

    type: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    max_outstanding: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Requests in flight at once on the connection (pipelined, matched by transaction id). "
        "Raise it only to what the gateway accepts (see its manual); 1 waits for each answer.",
    )

    def key(self) -> str:
        """What identifies the physical bus."""
        return f"tcp:{self.host}:{self.port}"

    def build(self) -> Transport:
        """The transport for this line."""
        return TcpTransport(self.host, self.port, self.connect_timeout_s)


class RtuOverTcpLine(StrictModel):
    """An RS-485 line behind a transparent serial-to-TCP gateway (RTU frames inside TCP)."""

    type: Literal["rtu-over-tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=4001, ge=1, le=65535)
    baudrate: int = Field(default=9600, description="Baud rate of the serial line behind the gateway.")
    connect_timeout_s: float = Field(default=3.0, gt=0, le=60)

    def key(self) -> str:
        """What identifies the physical bus."""
        return f"rtu-over-tcp:{self.host}:{self.port}"

    def build(self) -> Transport:
        """The transport for this line."""
        return TcpTransport(self.host, self.port, self.connect_timeout_s, baudrate=self.baudrate)


LineConfig = Annotated[Union[SerialLine, PtyLine, TcpLine, RtuOverTcpLine], Field(discriminator="type")]


def framing_of(line: SerialLine | PtyLine | TcpLine | RtuOverTcpLine) -> Literal["rtu", "tcp"]:
    """``tcp`` (MBAP) for Modbus TCP, ``rtu`` (CRC frames) for everything else."""
    return "tcp" if isinstance(line, TcpLine) else "rtu"


AnyLine = Union[SerialLine, PtyLine, TcpLine, RtuOverTcpLine]


def parse_port(port: str, baudrate: int = 9600, parity: str = "N") -> AnyLine:
    """A technician's ``--port``: ``tcp://host:port``, ``rtu+tcp://host:port``, a pty or a serial device."""
    for scheme, cls in (("tcp://", TcpLine), ("rtu+tcp://", RtuOverTcpLine)):
        if port.startswith(scheme):
            host, _, num = port[len(scheme) :].rpartition(":")
            if not host or not num.isdigit():
                raise ValueError(f"{port!r}: expected {scheme}HOST:PORT")
            if cls is TcpLine:
                return TcpLine(type="tcp", host=host, port=int(num))
            return RtuOverTcpLine(type="rtu-over-tcp", host=host, port=int(num), baudrate=baudrate)
    if port.startswith("/dev/pts/"):
        return PtyLine(type="pty", path=port, baudrate=baudrate, parity=parity)  # type: ignore[arg-type]
    return SerialLine(type="serial", port=port, baudrate=baudrate, parity=parity)  # type: ignore[arg-type]
