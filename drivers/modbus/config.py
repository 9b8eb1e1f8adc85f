"""The ``modbus`` device kind's entry in a site config (pydantic), validated before the agent starts.

What the running agent calls on it (``settings()``, an override's ``as_update()``) is in
:mod:`drivers.modbus.config_methods`; the sources are built in :mod:`drivers.modbus.kind`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from drivers.modbus.config_methods import ModbusConfigMethods, PointOverrideMethods
from drivers.modbus.device import apply_overrides
from drivers.modbus.kind import cached_profile
from drivers.modbus.points import profile_is_path
from drivers.modbus.profile import Profile
from drivers.transports.config import LineConfig
from kernel.config_base import StrictModel, validation_problems
from kernel.errors import ConfigError


class PollConfig(StrictModel):
    """Poll periods of the two point classes."""

    fast_s: float = Field(default=1.0, gt=0, le=86400)
    slow_s: float = Field(default=60.0, gt=0, le=86400)


class PointOverride(PointOverrideMethods, StrictModel):
    """Site changes to one profile point."""

    enabled: bool = True
    min: float | None = None
    max: float | None = None
    scale: float | None = None
    offset: float | None = None
    unit: str | None = None
    poll: Literal["fast", "slow"] | None = None


class Config(ModbusConfigMethods, StrictModel):
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
        profile = cached_profile(self.profile)
        names = {p.name for p in profile.points}
        unknown = sorted(set(self.overrides) - names)
        if unknown:
            raise ValueError(f"overrides name points the profile lacks: {', '.join(unknown)}")
        refused = _refused_overrides(profile, self.overrides)
        if refused:
            raise ValueError("; ".join(refused))
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be at least backoff_min_s")
        return self


def _refused_overrides(profile: Profile, overrides: dict[str, PointOverride]) -> list[str]:
    """``overrides.<point>: <problem>`` for each override the profile's point checks refuse (``scale: 0``)."""
    refused: list[str] = []
    for point, override in overrides.items():
        try:
            apply_overrides(profile, {point: override.as_update()})
        except ValidationError as exc:
            refused.extend(
                f"overrides.{point}: {problem.removeprefix('(top level): ')}" for problem in validation_problems(exc)
            )
    return refused


# The kind's module still serves this model (drivers.modbus.kind.Config, imported on demand): named there,
# its JSON Schema definition is what it was before the model moved out of the kind's module. Rebuilt
# here, so its annotations still resolve in this module.
Config.__module__ = "drivers.modbus.kind"
Config.model_rebuild(force=True)
