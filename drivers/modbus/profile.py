"""Device profiles: one YAML file per device model, validated like the site config.

The models are pydantic; what the running agent calls on a point or a profile is in
:mod:`drivers.modbus.points` (shared with the plain runtime types of :mod:`agent.runconfig`).

A profile lists a model's points (table, address, type, order, scale, unit, plausible range, poll
class). Site configs reference a profile by name (a file in ``drivers/modbus/profiles/``) or by
path, and may override a point's range, scale, unit or poll class. The format is documented in
``docs/device-profiles.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from drivers.modbus.codec import DataType, Order
from drivers.modbus.points import (  # noqa: F401 - re-exported
    BIT_TABLES,
    POINT_NAME,
    PROFILE_DIR,
    READ_FC,
    PointMethods,
    ProfileMethods,
    Table,
    profile_is_path,
    profile_path,
)
from kernel.config_base import StrictModel, load_yaml, validation_problems
from kernel.errors import ConfigError


class Emulate(StrictModel):
    """How an emulator moves this point (optional; a default is derived from unit and range)."""

    kind: Literal["constant", "noise", "walk", "diurnal", "counter"]
    value: float | None = Field(default=None, description="Centre or start value (engineering units).")
    amplitude: float | None = Field(default=None, ge=0, description="Noise, walk or diurnal half-swing.")
    rate_per_h: float | None = Field(default=None, ge=0, description="Counter increase per hour.")


class Point(PointMethods, StrictModel):
    """One value of a device."""

    name: str = Field(pattern=POINT_NAME)
    table: Table
    address: int = Field(ge=0, le=65535, description="Zero-based protocol address (not 3xxxx/4xxxx).")
    type: DataType = "uint16"
    count: int | None = Field(default=None, ge=1, le=123, description="Registers of a string.")
    bit: int | None = Field(
        default=None, ge=0, le=15, description="First bit of a bool or bits on a register."
    )
    width: int = Field(default=1, ge=1, le=16, description="Bits of a bit field.")
    byte_order: Order | None = None
    word_order: Order | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    writable: bool = False
    min: float | None = Field(default=None, description="Smallest plausible value (engineering units).")
    max: float | None = Field(default=None, description="Largest plausible value (engineering units).")
    poll: Literal["fast", "slow"] = "fast"
    description: str = ""
    emulate: Emulate | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(f"a {self.table} holds one bit: type must be bool, not {self.type}")
        if self.type == "string" and self.count is None:
            raise ValueError("a string needs count (registers, two characters each)")
        if self.type != "string" and self.count is not None:
            raise ValueError("count is only for strings")
        if self.type == "bits" and self.bit is None:
            raise ValueError("a bit field needs bit (its lowest bit, 0-15)")
        if self.bit is not None and self.type not in ("bits", "bool"):
            raise ValueError("bit is only for bool or bits on a register")
        if self.bit is not None and self.bit + self.width > 16:
            raise ValueError(f"bit {self.bit} + width {self.width} runs past the 16-bit register")
        if self.table in BIT_TABLES and self.bit is not None:
            raise ValueError("bit is only for registers")
        if self.address + self.registers() > 65536:
            raise ValueError(f"address {self.address} + {self.registers()} registers runs past 65535")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is larger than max {self.max}")
        if self.writable and self.table not in ("coil", "holding_register"):
            raise ValueError(f"a {self.table} cannot be written; only coils and holding registers")
        if self.writable and self.type == "bits":
            raise ValueError("bit fields share a register and cannot be written on their own")
        return self



class Profile(ProfileMethods, StrictModel):
    """A device model's register map."""

    model: str = Field(min_length=1)
    manufacturer: str = ""
    description: str = ""
    sources: list[str] = Field(default_factory=list, description="Datasheets or register maps used.")
    byte_order: Order = "big"
    word_order: Order = "big"
    max_registers: int = Field(
        default=125, ge=1, le=125, description="Largest register read the device takes."
    )
    max_bits: int = Field(default=2000, ge=1, le=2000, description="Largest coil/discrete read.")
    max_gap: int = Field(default=8, ge=0, le=124, description="Unused registers a block read may span.")
    max_answer_s: float = Field(
        default=0.5, gt=0, le=30, description="Longest turnaround the firmware may take (conformance suite)."
    )
    points: list[Point] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Profile:
        seen: set[str] = set()
        for i, p in enumerate(self.points):
            if p.name in seen:
                raise ValueError(f"points[{i}].name: {p.name!r} is used twice")
            seen.add(p.name)
            if p.table not in BIT_TABLES and p.registers() > self.max_registers:
                raise ValueError(
                    f"points[{i}]: {p.registers()} registers exceed max_registers {self.max_registers}"
                )
        return self



def load_profile(ref: str | Path) -> Profile:
    """Load and validate a profile; problems become one :class:`ConfigError` with path-named lines."""
    path = profile_path(ref)
    if not path.is_file() and not ("/" in str(ref) or str(ref).endswith((".yaml", ".yml"))):
        known = ", ".join(shipped_profiles()) or "none"
        raise ConfigError(str(ref), [f"no shipped profile of that name (shipped: {known})"])
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["(top level): a profile is a mapping with model and points"])
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), validation_problems(exc)) from None


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in ``drivers/modbus/profiles``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
