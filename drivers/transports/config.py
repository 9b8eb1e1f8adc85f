"""Line sections of the site config, and the transport each one builds.

``serial`` is an RS-485 adapter, ``pty`` a pseudo-terminal standing in for one (emulators, HIL),
``tcp`` a Modbus TCP device or gateway, ``rtu-over-tcp`` raw RTU frames through a serial gateway.
What the running agent calls on a line (``key()``, ``build()``) is in :mod:`drivers.transports.lines`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from drivers.transports.lines import (  # noqa: F401 - framing_of re-exported
    PtyLineMethods,
    RtuOverTcpLineMethods,
    SerialLineMethods,
    TcpLineMethods,
    framing_of,
)
from kernel.config_base import StrictModel

BAUD_RATES = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200)


class SerialLine(SerialLineMethods, StrictModel):
    """An RS-485 adapter."""

    type: Literal["serial"]
    port: str = Field(min_length=1, description="For example /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(
        default=9600, ge=50, le=4_000_000, description="One of the usual rates (1200 to 115200)."
    )
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1



class PtyLine(PtyLineMethods, StrictModel):
    """A pseudo-terminal standing in for an RS-485 line (emulators, HIL rigs)."""

    type: Literal["pty"]
    path: str = Field(min_length=1)
    baudrate: int = Field(default=9600, ge=50, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1



class TcpLine(TcpLineMethods, StrictModel):
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



class RtuOverTcpLine(RtuOverTcpLineMethods, StrictModel):
    """An RS-485 line behind a transparent serial-to-TCP gateway (RTU frames inside TCP)."""

    type: Literal["rtu-over-tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=4001, ge=1, le=65535)
    baudrate: int = Field(default=9600, description="Baud rate of the serial line behind the gateway.")
    connect_timeout_s: float = Field(default=3.0, gt=0, le=60)



LineConfig = Annotated[Union[SerialLine, PtyLine, TcpLine, RtuOverTcpLine], Field(discriminator="type")]


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
