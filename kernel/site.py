"""The site's identity and place: the part of the site config every layer may read."""

from __future__ import annotations

import zoneinfo
from typing import Protocol

from pydantic import Field, field_validator

from kernel.config_base import StrictModel

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""Site and device names: lower case, digits, ``_.-``; also used as MQTT topic segments."""


class Location(StrictModel):
    """Where the site is (WGS84)."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    elevation_m: float = 0.0


class SiteInfo(StrictModel):
    """The site's identity."""

    id: str = Field(pattern=NAME_PATTERN, description="Site id; also the MQTT topic segment.")
    name: str = Field(min_length=1)
    location: Location
    timezone: str = "Asia/Ho_Chi_Minh"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Ho_Chi_Minh)") from exc
        return value


class SiteView(Protocol):
    """What a source may read of the assembled site config: its identity, and sections by name."""

    @property
    def site(self) -> SiteInfo:
        """The site's identity and place."""
        ...
