"""Device kind ``pms``: a Plantower PMS5003 or PMS7003 on its own serial port.

In ``active`` mode (the sensor's default) frames stream in and the mean of each point over the
period is stored. In ``passive`` mode the driver asks for one frame per period (command 0xE2) and,
with ``sleep_between``, puts the sensor to sleep between reads and wakes it ``warmup_s`` before the
next one (the manual asks for 30 s of fan run before readings are stable), which spares the laser
and fan on long periods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from drivers.pms import frames as pf
from drivers.serial_sensors.config import SerialSensorConfig, check_own_ports
from drivers.serial_sensors.source import Framer, SerialSensorSource, mean_readings
from drivers.transports.base import Transport
from kernel.kinds import RigSupport
from kernel.readings import Reading
from kernel.source import RunContext, Source

UNITS = dict(pf.POINTS)


class Config(SerialSensorConfig):
    """A Plantower particulate sensor."""

    driver: Literal["pms"]
    model: Literal["PMS5003", "PMS7003"] = Field(
        default="PMS5003", description="Both speak the same protocol; recorded for the inventory."
    )
    mode: Literal["active", "passive"] = "active"
    sleep_between: bool = Field(default=False, description="Passive mode: sleep between reads.")
    warmup_s: float = Field(default=30.0, ge=0.0, le=300)

    @model_validator(mode="after")
    def _sleep_needs_passive(self) -> Config:
        if self.sleep_between and self.mode != "passive":
            raise ValueError("sleep_between: needs mode passive (an active sensor streams all the time)")
        if self.sleep_between and self.period_s <= self.warmup_s:
            raise ValueError(f"sleep_between: period_s {self.period_s} must exceed warmup_s {self.warmup_s}")
        return self


class PmsSource(SerialSensorSource):
    """Acquisition from one PMS sensor."""

    cfg: Config

    def __init__(self, cfg: Config, transport: Transport | None = None) -> None:
        super().__init__(cfg, transport)
        self._sums: dict[str, float] = {}
        self._count = 0

    def make_framer(self) -> Framer:
        """A PMS framer."""
        return pf.PmsFramer()

    def silence_limit(self) -> float:
        """A passive sensor is quiet between reads: allow a whole period on top."""
        extra = self.cfg.period_s if self.cfg.mode == "passive" else 0.0
        return self.cfg.silence_s + extra

    async def on_open(self, transport: Transport, ctx: RunContext) -> None:
        """Wake the sensor and set its mode."""
        await transport.write(pf.encode_command(pf.CMD_SLEEP, 1))
        await transport.write(pf.encode_command(pf.CMD_MODE, 0 if self.cfg.mode == "passive" else 1))

    def on_frame(self, frame: pf.Frame, ctx: RunContext) -> list[Reading]:
        """Accumulate (active) or store at once (passive)."""
        if not isinstance(frame, pf.Measurement):
            return []
        values = frame.as_dict()
        if self.cfg.mode == "passive":
            if self.cfg.sleep_between:
                self.outbox.append(pf.encode_command(pf.CMD_SLEEP, 0))
            return mean_readings(self.name, {k: float(v) for k, v in values.items()}, 1, UNITS, ctx, 0)
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        return []

    async def on_period(self, transport: Transport, ctx: RunContext) -> list[Reading]:
        """Active: the period's means. Passive: ask for a frame (after waking the sensor if asleep)."""
        if self.cfg.mode == "active":
            out = mean_readings(self.name, self._sums, self._count, UNITS, ctx)
            self._sums, self._count = {}, 0
            return out
        if self.cfg.sleep_between:
            await transport.write(pf.encode_command(pf.CMD_SLEEP, 1))
            await asyncio.sleep(self.cfg.warmup_s)
        await transport.write(pf.encode_command(pf.CMD_READ))
        return []


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One source per sensor (each has its own port)."""
    check_own_ports("pms", configs)
    return [PmsSource(c) for c in configs if c.enabled]


# For HIL rigs: the emulator beside this driver, and the datasheet's ranges (PMS5003: 0-1000 ug/m3
# for mass concentrations; particle counts are 16-bit). Rig files may call it pms5003.
RIG = RigSupport(
    emulator="drivers.pms.emulator:PmsEmulator",
    ranges={
        **dict.fromkeys(("pm1_0_cf1", "pm2_5_cf1", "pm10_cf1", "pm1_0", "pm2_5", "pm10"), (0.0, 1000.0)),
        **dict.fromkeys(("n0_3", "n0_5", "n1_0", "n2_5", "n5_0", "n10"), (0.0, 65535.0)),
    },
    aliases=("pms5003",),
    site_fields={"warmup_s": 0.0},
    emulator_options={"fast": True},
)
