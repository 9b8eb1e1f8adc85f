"""Fields every streaming serial sensor device has: its line, reporting period and silence limit."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from drivers.transports.config import LineConfig
from kernel.config_base import StrictModel
from kernel.errors import ConfigError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class SerialSensorConfig(StrictModel):
    """One sensor on its own serial port (``line``: serial, pty, or a TCP serial server)."""

    name: str = Field(pattern=NAME_PATTERN)
    enabled: bool = True
    line: LineConfig
    period_s: float = Field(default=60.0, ge=1.0, le=86400, description="How often readings are stored.")
    silence_s: float = Field(
        default=10.0,
        ge=0.5,
        le=3600,
        description="No valid frame for this long: the sensor is reported offline.",
    )


def check_own_ports(kind: str, configs: Sequence[SerialSensorConfig]) -> None:
    """A streaming sensor needs its port to itself: refuse two enabled devices on one line."""
    seen: dict[str, str] = {}
    problems: list[str] = []
    for cfg in configs:
        if not cfg.enabled:
            continue
        key = cfg.line.key()
        if key in seen:
            problems.append(f"{cfg.name}.line: {key} is already used by {seen[key]}")
        seen[key] = cfg.name
    if problems:
        raise ConfigError(f"{kind} devices", problems)
