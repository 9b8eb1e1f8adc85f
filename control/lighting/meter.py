"""A circuit's energy meter: voltage, current, active power and imported energy.

:class:`SdmMeter` reads an Eastron SDM120 or one phase of an SDM630 through the shared Modbus driver
(drivers/modbus), with register addresses and types taken from the driver's shipped device profiles
(``eastron-sdm120``, ``eastron-sdm630``; Eastron's published Modbus protocol register maps):
input registers, IEEE-754 float32, high word first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from control.lighting.config import MeterConfig
from drivers.modbus.codec import apply_scale, decode_raw
from drivers.modbus.link import ModbusLink
from drivers.modbus.profile import Profile, load_profile


@dataclass(frozen=True)
class MeterSample:
    """One reading of a circuit meter; ``mono`` is when it was taken (monotonic seconds)."""

    voltage: float
    current: float
    power: float
    energy_kwh: float
    mono: float


class CircuitMeter(Protocol):
    """What lamp-failure detection needs from a meter."""

    async def read(self) -> MeterSample:
        """Read the meter now."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


def meter_points(cfg: MeterConfig) -> tuple[Profile, list[str]]:
    """The meter's profile and the names of its voltage, current, power and import-energy points."""
    if cfg.type == "sdm120":
        return load_profile("eastron-sdm120"), ["voltage", "current", "active_power", "import_active_energy"]
    n = cfg.phase
    names = [f"l{n}_voltage", f"l{n}_current", f"l{n}_active_power", "import_active_energy"]
    return load_profile("eastron-sdm630"), names


class SdmMeter:
    """Reads the four values in two block reads (the electrical values, then the energy counter)."""

    def __init__(self, cfg: MeterConfig, link: ModbusLink) -> None:
        self.cfg = cfg
        self.link = link
        profile, names = meter_points(cfg)
        self.points = [profile.point(n) for n in names]
        self.orders = [(profile.byte_order_of(p), profile.word_order_of(p)) for p in self.points]

    async def read(self) -> MeterSample:
        """Voltage, current and power of the circuit's phase, and the total imported energy."""
        electrical = self.points[:3]
        start = min(p.address for p in electrical)
        block = await self.link.read(4, start, max(p.end for p in electrical) - start)
        energy_pt = self.points[3]
        energy = await self.link.read(4, energy_pt.address, energy_pt.registers())
        regs_of = [block[p.address - start : p.end - start] for p in electrical] + [energy]
        values = [
            float(apply_scale(decode_raw([int(r) for r in regs], pt.type, bo, wo), pt.scale, pt.offset))
            for pt, (bo, wo), regs in zip(self.points, self.orders, regs_of, strict=True)
        ]
        return MeterSample(values[0], values[1], values[2], values[3], time.monotonic())

    async def close(self) -> None:
        """Close the link."""
        await self.link.close()
