"""Configuration of the signal output drivers that belongs to the drivers themselves."""

from __future__ import annotations

from pydantic import Field

from kernel.config_base import StrictModel


class GpioHeadConfig(StrictModel):
    """The relay pins (BCM numbers) of one group's heads; pedestrian heads have no yellow."""

    red: int = Field(ge=0, le=53)
    yellow: int | None = Field(default=None, ge=0, le=53)
    green: int = Field(ge=0, le=53)
    yield_green: int | None = Field(
        default=None, ge=0, le=53, description="Permissive aspect, e.g. flashing arrow."
    )
