"""An emulated SDS011: a 0xC0 frame per second in active mode, query and sleep commands answered
with 0xC5 replies as protocol V1.3 shows, faults on demand."""

from __future__ import annotations

from drivers.sds011 import frames as sf
from drivers.serial_sensors.emulator import StreamEmulator


class Sds011Emulator(StreamEmulator):
    """A Nova SDS011 on a pty. ``interval_s`` defaults to the datasheet's one frame per second."""

    def __init__(
        self,
        pm2_5: float = 25.0,
        pm10: float = 40.0,
        device_id: int = 0xA160,
        interval_s: float = 1.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        self.pm2_5, self.pm10 = pm2_5, pm10
        self.device_id = device_id
        self.interval_s = interval_s
        self.query_mode = False
        self.asleep = False
        self._framer = sf.Sds011Framer(accept=(sf.CMD_HOST,))

    def measurement(self) -> sf.Measurement:
        """The current air, with a little noise, in tenths of ug/m3."""

        def tenth(v: float) -> int:
            return min(9999, max(0, round(v * (1 + self.rng.uniform(-0.03, 0.03)) * 10)))

        return sf.Measurement(tenth(self.pm2_5), tenth(self.pm10), self.device_id)

    def interval(self) -> float:
        """Seconds between active-mode frames."""
        return self.interval_s

    def next_frame(self) -> bytes | None:
        """A frame in active mode while working."""
        if self.query_mode or self.asleep:
            return None
        return sf.encode_measurement(self.measurement())

    def on_host_bytes(self, data: bytes) -> list[bytes]:
        """Execute 19-byte host commands addressed to this sensor (or to 0xFFFF)."""
        out: list[bytes] = []
        for cmd in self._framer.feed(data):
            if not isinstance(cmd, sf.Command) or cmd.device_id not in (sf.ALL_SENSORS, self.device_id):
                continue
            self.stats.commands += 1
            out.extend(self._execute(cmd))
        return out

    def _reply(self, command: int, a: int, b: int) -> bytes:
        return sf.encode_reply(sf.Reply(command, (a, b, 0), self.device_id))

    def _execute(self, cmd: sf.Command) -> list[bytes]:
        set_it, value = cmd.data[1], cmd.data[2]
        if cmd.command == sf.SET_SLEEP:
            if set_it:
                self.asleep = value == 0
            return [self._reply(sf.SET_SLEEP, set_it, 0 if self.asleep else 1)]
        if self.asleep:
            return []  # a sleeping sensor answers only the wake command
        if cmd.command == sf.SET_REPORTING:
            if set_it:
                self.query_mode = value == 1
            return [self._reply(sf.SET_REPORTING, set_it, 1 if self.query_mode else 0)]
        if cmd.command == sf.QUERY_DATA:
            return [sf.encode_measurement(self.measurement())]
        return []
