"""Device kind ``sds011``: a Nova Fitness SDS011 on its own serial port.

``active`` (the factory default) streams a frame per second and the period's mean is stored;
``query`` switches the sensor to query mode and asks for one frame per period (command 4), and with
``sleep_between`` sleeps it between reads (command 6), waking it ``warmup_s`` before each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from drivers.sds011 import frames as sf
from drivers.serial_sensors.config import SerialSensorConfig, check_own_ports
from drivers.serial_sensors.source import Framer, SerialSensorSource, mean_readings
from drivers.transports.base import Transport
from kernel.kinds import RigSupport
from kernel.readings import Reading
from kernel.source import RunContext, Source

UNITS = {"pm2_5": "ug/m3", "pm10": "ug/m3"}


class Config(SerialSensorConfig):
    """A Nova SDS011 particulate sensor."""

    driver: Literal["sds011"]
    mode: Literal["active", "query"] = "active"
    device_id: int = Field(
        default=sf.ALL_SENSORS, ge=0, le=0xFFFF, description="0xFFFF addresses any sensor."
    )
    sleep_between: bool = False
    warmup_s: float = Field(default=30.0, ge=0.0, le=300)

    @model_validator(mode="after")
    def _sleep_needs_query(self) -> Config:
        if self.sleep_between and self.mode != "query":
            raise ValueError("sleep_between: needs mode query (an active sensor streams all the time)")
        if self.sleep_between and self.period_s <= self.warmup_s:
            raise ValueError(f"sleep_between: period_s {self.period_s} must exceed warmup_s {self.warmup_s}")
        return self


class Sds011Source(SerialSensorSource):
    """Acquisition from one SDS011."""

    cfg: Config

    def __init__(self, cfg: Config, transport: Transport | None = None) -> None:
        super().__init__(cfg, transport)
        self._sums = {"pm2_5": 0.0, "pm10": 0.0}
        self._count = 0
        self.sensor_id: int | None = None

    def make_framer(self) -> Framer:
        """An SDS011 framer for sensor-to-host frames."""
        return sf.Sds011Framer()

    def silence_limit(self) -> float:
        """A sensor in query mode is quiet between reads: allow a whole period on top."""
        return self.cfg.silence_s + (self.cfg.period_s if self.cfg.mode == "query" else 0.0)

    async def on_open(self, transport: Transport, ctx: RunContext) -> None:
        """Wake the sensor and set its reporting mode."""
        dev = self.cfg.device_id
        await transport.write(sf.sleep_command(False, dev))
        await transport.write(sf.reporting_command(self.cfg.mode == "query", dev))

    def on_frame(self, frame: sf.Frame, ctx: RunContext) -> list[Reading]:
        """Accumulate (active) or store at once (query)."""
        if not isinstance(frame, sf.Measurement):
            return []
        if self.cfg.device_id != sf.ALL_SENSORS and frame.device_id != self.cfg.device_id:
            ctx.metrics.inc("kbe_serial_foreign_frames_total", labels={"device": self.name})
            return []
        self.sensor_id = frame.device_id
        if self.cfg.mode == "query":
            if self.cfg.sleep_between:
                self.outbox.append(sf.sleep_command(True, self.cfg.device_id))
            return mean_readings(self.name, {"pm2_5": frame.pm2_5, "pm10": frame.pm10}, 1, UNITS, ctx)
        self._sums["pm2_5"] += frame.pm2_5
        self._sums["pm10"] += frame.pm10
        self._count += 1
        return []

    async def on_period(self, transport: Transport, ctx: RunContext) -> list[Reading]:
        """Active: the period's means. Query: ask for a frame (after waking the sensor if asleep)."""
        if self.cfg.mode == "active":
            out = mean_readings(self.name, self._sums, self._count, UNITS, ctx)
            self._sums, self._count = {"pm2_5": 0.0, "pm10": 0.0}, 0
            return out
        if self.cfg.sleep_between:
            await transport.write(sf.sleep_command(False, self.cfg.device_id))
            await asyncio.sleep(self.cfg.warmup_s)
        await transport.write(sf.query_command(self.cfg.device_id))
        return []


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One source per sensor (each has its own port)."""
    check_own_ports("sds011", configs)
    return [Sds011Source(c) for c in configs if c.enabled]


# For HIL rigs: the emulator beside this driver and the datasheet's range (0-999.9 ug/m3).
RIG = RigSupport(
    emulator="drivers.sds011.emulator:Sds011Emulator",
    ranges={"pm2_5": (0.0, 999.9), "pm10": (0.0, 999.9)},
    site_fields={"warmup_s": 0.0},
)
