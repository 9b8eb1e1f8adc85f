"""Device kind ``nmea_gps``: an NMEA 0183 GPS receiver giving the station's position and a time source.

Each period the last fix is stored (latitude, longitude, altitude, fix quality, satellites, HDOP)
together with how far the agent's wall clock is from GPS time. A valid RMC fix whose time agrees
with the wall clock within ``max_offset_s`` marks the agent's clock synchronised
(:meth:`kernel.clock.Clock.mark_synced`), so readings are stamped ``ClockQuality.SYNCED`` on a board
with no NTP. Gaining or losing the fix is stored as an EVENT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from drivers.nmea import sentences as nm
from drivers.serial_sensors.config import SerialSensorConfig, check_own_ports
from drivers.serial_sensors.source import Framer, SerialSensorSource
from drivers.transports.base import Transport
from kernel.kinds import RigSupport
from kernel.readings import Priority, Quality, Reading
from kernel.source import RunContext, Source


class Config(SerialSensorConfig):
    """A GPS receiver speaking NMEA 0183."""

    driver: Literal["nmea_gps"]
    max_offset_s: float = Field(
        default=1.0, gt=0, le=60, description="GPS time this close to the wall clock marks the clock synced."
    )
    time_source: bool = Field(
        default=True, description="Let a valid fix mark the agent's clock synchronised."
    )


class NmeaSource(SerialSensorSource):
    """Acquisition from one GPS receiver."""

    cfg: Config

    def __init__(self, cfg: Config, transport: Transport | None = None) -> None:
        super().__init__(cfg, transport)
        self.gga: nm.Gga | None = None
        self.rmc: nm.Rmc | None = None
        self.offset_s: float | None = None
        self.has_fix = False

    def make_framer(self) -> Framer:
        """An NMEA sentence framer."""
        return nm.NmeaFramer()

    def on_frame(self, frame: nm.Sentence, ctx: RunContext) -> list[Reading]:
        """Keep the latest GGA and RMC; check the clock; report fix changes."""
        if isinstance(frame, nm.Gga):
            self.gga = frame
            return []
        if not isinstance(frame, nm.Rmc):
            return []
        self.rmc = frame
        out: list[Reading] = []
        usable = frame.time_usable
        if usable and frame.when is not None:
            self.offset_s = frame.when.timestamp() - ctx.clock.now()
            ctx.metrics.set("kbe_gps_clock_offset_seconds", self.offset_s, {"device": self.name})
            if self.cfg.time_source and abs(self.offset_s) <= self.cfg.max_offset_s:
                ctx.clock.mark_synced()
        if usable != self.has_fix:
            self.has_fix = usable
            out.append(
                Reading(
                    self.name,
                    "fix",
                    usable,
                    ctx.clock.now(),
                    priority=Priority.EVENT,
                    clock=ctx.clock.quality(),
                )
            )
        return out

    async def on_period(self, transport: Transport, ctx: RunContext) -> list[Reading]:
        """The last fix and the clock offset."""
        now, clock = ctx.clock.now(), ctx.clock.quality()
        out: list[Reading] = []

        def add(
            point: str, value: float | int | bool | None, unit: str = "", q: Quality = Quality.GOOD
        ) -> None:
            if value is not None:
                out.append(Reading(self.name, point, value, now, unit, q, clock=clock))

        gga, rmc = self.gga, self.rmc
        add("fix_quality", gga.quality if gga else 0)
        if gga is not None:
            add("satellites", gga.satellites)
            add("hdop", gga.hdop)
        if self.has_fix and rmc is not None:
            add("lat", rmc.lat, "deg")
            add("lon", rmc.lon, "deg")
            if gga is not None and gga.quality > 0:
                add("altitude", gga.altitude_m, "m")
        if self.offset_s is not None:
            add(
                "clock_offset",
                round(self.offset_s, 3),
                "s",
                Quality.GOOD if self.has_fix else Quality.UNCERTAIN,
            )
        return out


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One source per receiver."""
    check_own_ports("nmea_gps", configs)
    return [NmeaSource(c) for c in configs if c.enabled]


# For HIL rigs: the emulator beside this driver; WGS84 degrees, GGA fix quality 0-8, HDOP 0-99.99.
# Rig files may call it nmea.
RIG = RigSupport(
    emulator="drivers.nmea.emulator:NmeaEmulator",
    ranges={
        "lat": (-90.0, 90.0),
        "lon": (-180.0, 180.0),
        "fix_quality": (0.0, 8.0),
        "satellites": (0.0, 99.0),
        "hdop": (0.0, 99.99),
    },
    aliases=("nmea",),
    readings_per_period=6,  # the five ranged points and the clock offset
)
