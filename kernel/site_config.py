"""The pydantic models of the site's identity and place (the ``site`` section)."""

from __future__ import annotations

import zoneinfo

from pydantic import Field, field_validator

from kernel.config_base import StrictModel
from kernel.site import NAME_PATTERN


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
