"""A real serial port (RS-485 adapter) opened with pyserial and read through the event loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from drivers.transports.fd import FdTransport
from kernel.errors import TransportError

if TYPE_CHECKING:
    import serial

Parity = Literal["N", "E", "O"]


class SerialTransport(FdTransport):
    """A serial port configured by pyserial (baud, parity, stop bits); I/O is non-blocking on its fd."""

    def __init__(
        self, port: str, baudrate: int = 9600, parity: Parity = "N", stopbits: int = 1, bytesize: int = 8
    ) -> None:
        super().__init__(f"serial:{port}")
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.bytesize = bytesize
        self.bits_per_char = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
        self._serial: serial.Serial | None = None

    async def _open(self) -> None:
        import serial  # pyserial only where a serial line is opened: TCP-only sites never load it

        try:
            self._serial = serial.Serial(
                self.port,
                baudrate=self.baudrate,
                bytesize=self.bytesize,
                parity=self.parity,
                stopbits=self.stopbits,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, ValueError) as exc:
            raise TransportError(f"{self.name}: cannot open: {exc}") from exc
        self._serial.reset_input_buffer()
        self._attach(self._serial.fileno())

    async def _close(self) -> None:
        self._detach()
        if self._serial is not None:
            self._serial.close()
            self._serial = None
