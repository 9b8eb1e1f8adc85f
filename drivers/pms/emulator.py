"""An emulated PMS5003/PMS7003: streams 32-byte frames at the sensor's rate, obeys mode, read and
sleep commands, acknowledges them as the manual shows, with faults on demand (see
:class:`~drivers.serial_sensors.emulator.Faults`)."""

from __future__ import annotations

from drivers.pms import frames as pf
from drivers.serial_sensors.emulator import StreamEmulator


class PmsEmulator(StreamEmulator):
    """A Plantower sensor on a pty.

    ``fast`` picks the "fast" active sub-mode (a frame every 200-800 ms) over the "stable" one
    (every 2.3 s). ``pm2_5`` is the atmospheric PM2.5 the sensor sees; the other points follow it.
    """

    def __init__(
        self, model: str = "PMS5003", pm2_5: float = 35.0, fast: bool = False, seed: int | None = None
    ):
        super().__init__(seed)
        self.model = model
        self.pm2_5 = pm2_5
        self.fast = fast
        self.passive = False
        self.asleep = False
        self._cmd = bytearray()

    def measurement(self) -> pf.Measurement:
        """The frame for the current air, with a little noise."""
        pm25 = max(0.0, self.pm2_5 * (1 + self.rng.uniform(-0.05, 0.05)))
        atm = (round(pm25 * 0.65), round(pm25), round(pm25 * 1.3))
        cf1 = tuple(round(v * 1.1) for v in atm)
        counts = tuple(round(pm25 * k) for k in (60.0, 18.0, 3.5, 0.6, 0.15, 0.05))
        reserved = 0x9100 if self.model == "PMS7003" else 0  # what PMS7003 units are seen to send
        return pf.Measurement(tuple(min(v, 0xFFFF) for v in (*cf1, *atm, *counts)), reserved)

    def interval(self) -> float:
        """Seconds to the next active-mode frame."""
        return self.rng.uniform(0.2, 0.8) if self.fast else 2.3

    def next_frame(self) -> bytes | None:
        """A frame in active mode while awake."""
        if self.passive or self.asleep:
            return None
        return pf.encode_measurement(self.measurement())

    def on_host_bytes(self, data: bytes) -> list[bytes]:
        """Execute 7-byte commands (0xE1 mode, 0xE2 read, 0xE4 sleep/wake)."""
        self._cmd += data
        out: list[bytes] = []
        while True:
            start = self._cmd.find(pf.START)
            if start < 0:
                del self._cmd[: max(0, len(self._cmd) - 1)]
                return out
            del self._cmd[:start]
            if len(self._cmd) < 7:
                return out
            cmd = bytes(self._cmd[:7])
            if pf.checksum(cmd[:5]) != int.from_bytes(cmd[5:7], "big"):
                del self._cmd[:1]
                continue
            del self._cmd[:7]
            self.stats.commands += 1
            out.extend(self._execute(cmd[2], cmd[4]))

    def _execute(self, command: int, data: int) -> list[bytes]:
        if command == pf.CMD_SLEEP:
            if data == 0:
                self.asleep = True
                return [pf.encode_ack(pf.CMD_SLEEP, 0)]
            self.asleep = False  # waking is not acknowledged
            return []
        if self.asleep:
            return []
        if command == pf.CMD_MODE:
            self.passive = data == 0
            return [pf.encode_ack(pf.CMD_MODE, data)]
        if command == pf.CMD_READ and self.passive:
            return [pf.encode_measurement(self.measurement())]
        return []
