"""The thermo probe's emulator: a ``T=.. H=..`` line every ``interval_s`` on a pseudo-terminal."""

from __future__ import annotations

from drivers.serial_sensors.emulator import StreamEmulator


class ThermoEmulator(StreamEmulator):
    """A thermo probe; set ``temperature`` and ``humidity`` to change what it reports."""

    def __init__(
        self, temperature: float = 24.0, humidity: float = 60.0, interval_s: float = 0.2, seed: int | None = None
    ) -> None:
        super().__init__(seed)
        self.temperature = temperature
        self.humidity = humidity
        self.interval_s = interval_s

    def interval(self) -> float:
        """Seconds between lines."""
        return self.interval_s

    def next_frame(self) -> bytes:
        """One line, with a little noise."""
        t = self.temperature + self.rng.uniform(-0.05, 0.05)
        return f"T={t:.2f} H={self.humidity:.1f}\r\n".encode("ascii")

    def on_host_bytes(self, data: bytes) -> list[bytes]:
        """The probe takes no commands."""
        return []

    def break_checksum(self, frame: bytes) -> bytes:
        """No checksum on this wire: a corrupted line loses its separator."""
        return frame.replace(b"=", b"", 1)
