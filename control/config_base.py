"""Config pieces shared by the lighting and traffic controllers (their device entry, their names)."""

from __future__ import annotations

from pydantic import Field

from kernel.config_base import StrictModel
from kernel.site import NAME_PATTERN

NAME = NAME_PATTERN
"""The pattern of every name in the lighting and traffic sections (circuits, groups, stages, ...)."""


class ControllerDeviceConfig(StrictModel):
    """The device entry of a controller whose model is a top-level section of the site config.

    It only names the controller (``{driver: lighting, name: street-lights}``); a kind narrows
    ``driver`` to its own literal and may add fields after these.
    """

    driver: str
    name: str = Field(pattern=NAME)
    enabled: bool = True
