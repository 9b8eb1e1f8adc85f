"""Device kind ``modbus``: site-config entries and the sources built from them (one per physical bus).

Example entry::

    - driver: modbus
      name: meter-main
      profile: eastron-sdm120          # a shipped profile, or a path to a YAML file
      unit: 1
      line: {type: serial, port: /dev/ttyUSB0, baudrate: 9600, parity: N}
      poll: {fast_s: 1, slow_s: 60}
      overrides: {voltage: {min: 180, max: 260}}

Devices whose ``line`` names the same port (or host:port) share one bus and one scheduler.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.profile import Profile, load_profile, profile_is_path, profile_path
from drivers.transports.config import LineConfig, TcpLine, framing_of
from kernel.config_base import StrictModel
from kernel.errors import ConfigError
from kernel.kinds import RigSupport
from kernel.source import RunContext, Source


@functools.lru_cache(maxsize=64)
def _cached_profile(path: str) -> Profile:
    return load_profile(path)


def cached_profile(ref: str) -> Profile:
    """Load a profile once per process."""
    return _cached_profile(str(profile_path(ref)))


def profile_ranges(options: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """The ranges of the points of ``options["profile"]`` that declare both min and max."""
    return {
        pt.name: (float(pt.min), float(pt.max))
        for pt in cached_profile(str(options["profile"])).points
        if pt.min is not None and pt.max is not None
    }


# For HIL rigs and the firmware suite: an emulated slave built from the device's profile.
RIG = RigSupport(
    emulator="drivers.modbus.emulator:EmulatedDevice",
    transport="modbus",
    ranges_for="drivers.modbus.kind:profile_ranges",
)


class PollConfig(StrictModel):
    """Poll periods of the two point classes."""

    fast_s: float = Field(default=1.0, gt=0, le=86400)
    slow_s: float = Field(default=60.0, gt=0, le=86400)


class PointOverride(StrictModel):
    """Site changes to one profile point."""

    enabled: bool = True
    min: float | None = None
    max: float | None = None
    scale: float | None = None
    offset: float | None = None
    unit: str | None = None
    poll: Literal["fast", "slow"] | None = None

    def as_update(self) -> dict[str, object]:
        """Only the fields the site set."""
        return dict(self.model_dump(exclude_unset=True).items())


class Config(StrictModel):
    """One Modbus device at a site."""

    driver: Literal["modbus"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    enabled: bool = True
    profile: str = Field(min_length=1, description="Shipped profile name or path to a profile YAML.")
    unit: int = Field(ge=1, le=247, description="Modbus unit (slave) id.")
    line: LineConfig
    poll: PollConfig = PollConfig()
    timeout_s: float = Field(default=0.5, gt=0, le=30, description="Device turnaround allowed per request.")
    retries: int = Field(default=1, ge=0, le=5)
    breaker_after: int = Field(
        default=3, ge=1, le=100, description="Failed polls before the device is set aside."
    )
    backoff_min_s: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=60.0, gt=0, le=86_400)
    extra_silence_ms: float = Field(default=0.0, ge=0, le=1000, description="Added to the 3.5-character gap.")
    max_gap: int | None = Field(default=None, ge=0, le=124, description="Overrides the profile's max_gap.")
    overrides: dict[str, PointOverride] = Field(default_factory=dict)

    @field_validator("profile")
    @classmethod
    def _loads(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        if base is not None and profile_is_path(value) and not Path(value).is_absolute():
            value = str(Path(base) / value)  # a relative profile path is relative to the site config
        try:
            cached_profile(value)
        except ConfigError as exc:
            raise ValueError(f"profile {value!r}: {'; '.join(exc.problems[:3])}") from None
        return value

    @model_validator(mode="after")
    def _known_points(self) -> Config:
        names = {p.name for p in cached_profile(self.profile).points}
        unknown = sorted(set(self.overrides) - names)
        if unknown:
            raise ValueError(f"overrides name points the profile lacks: {', '.join(unknown)}")
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be at least backoff_min_s")
        return self

    def settings(self) -> DeviceSettings:
        """Acquisition settings for :class:`ModbusDevice`."""
        return DeviceSettings(
            name=self.name,
            unit=self.unit,
            timeout_s=self.timeout_s,
            retries=self.retries,
            fast_s=self.poll.fast_s,
            slow_s=self.poll.slow_s,
            breaker_after=self.breaker_after,
            backoff_min_s=self.backoff_min_s,
            backoff_max_s=self.backoff_max_s,
            max_gap=self.max_gap,
            overrides={k: v.as_update() for k, v in self.overrides.items()},
        )


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One :class:`ModbusBus` per physical line; devices on a line must agree on its settings."""
    groups: dict[str, list[Config]] = {}
    for c in configs:
        if c.enabled:
            groups.setdefault(c.line.key(), []).append(c)
    sources: list[Source] = []
    for key, group in groups.items():
        first = group[0]
        units: dict[int, str] = {}
        for c in group:
            if c.line != first.line:
                raise ConfigError("devices", [f"{c.name}.line: {key} is set up differently by {first.name}"])
            if c.unit in units:
                raise ConfigError(
                    "devices", [f"{c.name}.unit: {c.unit} is already used by {units[c.unit]} on {key}"]
                )
            units[c.unit] = c.name
        devices = [ModbusDevice(cached_profile(c.profile), c.settings()) for c in group]
        extra = max(c.extra_silence_ms for c in group) / 1000.0
        outstanding = first.line.max_outstanding if isinstance(first.line, TcpLine) else 1
        sources.append(
            ModbusBus(key, first.line.build(), devices, framing_of(first.line), extra, max_outstanding=outstanding)
        )
    return sources
