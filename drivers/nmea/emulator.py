"""An emulated NMEA 0183 GPS receiver: a GGA, RMC and GSV burst every second, with the fix, the
receiver's time offset and faults switchable at run time."""

from __future__ import annotations

import datetime as dt
import time

from drivers.nmea import sentences as nm
from drivers.serial_sensors.emulator import StreamEmulator


class NmeaEmulator(StreamEmulator):
    """A GPS receiver on a pty at ``lat``/``lon``. Set ``fix`` False to lose the fix (RMC status V,
    GGA quality 0); ``time_offset_s`` shifts the time it reports from the host's wall clock."""

    def __init__(
        self,
        lat: float = 21.1861,
        lon: float = 106.0763,
        altitude_m: float = 12.0,
        interval_s: float = 1.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        self.lat, self.lon, self.altitude_m = lat, lon, altitude_m
        self.interval_s = interval_s
        self.fix = True
        self.time_offset_s = 0.0
        self.talker = "GN"

    def interval(self) -> float:
        """One burst per second (the usual 1 Hz receiver)."""
        return self.interval_s

    def next_frame(self) -> bytes:
        """GGA, RMC and a GSV sentence for now."""
        when = dt.datetime.fromtimestamp(time.time() + self.time_offset_s, dt.timezone.utc)
        when = when.replace(microsecond=when.microsecond // 10000 * 10000)
        jitter = self.rng.uniform(-2e-6, 2e-6)
        lat, lon = (self.lat + jitter, self.lon + jitter) if self.fix else (None, None)
        gga = nm.Gga(
            self.talker,
            when.time(),
            lat,
            lon,
            1 if self.fix else 0,
            9 if self.fix else 0,
            0.9 if self.fix else None,
            self.altitude_m if self.fix else None,
        )
        rmc = nm.Rmc(
            self.talker, when, self.fix, lat, lon, 0.0 if self.fix else None, None, "A" if self.fix else "N"
        )
        gsv = nm.wrap("GPGSV,1,1,04,05,45,120,38,13,60,045,41,15,30,300,35,24,15,210,29")
        return nm.encode_gga(gga) + nm.encode_rmc(rmc) + gsv

    def break_checksum(self, frame: bytes) -> bytes:
        """Spoil the checksum of the RMC sentence in the burst."""
        at = frame.find(b"RMC,")
        star = frame.find(b"*", at)
        digit = frame[star + 1 : star + 2]
        wrong = b"0" if digit != b"0" else b"1"
        return frame[: star + 1] + wrong + frame[star + 2 :]

    def on_host_bytes(self, data: bytes) -> list[bytes]:
        """A plain receiver ignores what the host sends."""
        return []
