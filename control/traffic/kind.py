"""Device kind ``traffic``: runs the site's signalised intersections as supervised sources.

The device entry only names the controller (``{driver: traffic, name: signals}``); what it runs is
the site config's top-level ``traffic`` section, one source per intersection. Each source also takes
the centre's commands of kind ``traffic`` (``apply_command``), routed by intersection name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from control.config_base import ControllerDeviceConfig
from control.traffic.source import traffic_sources
from drivers.gpio.factory import PinFactories
from kernel.errors import ConfigError
from kernel.source import RunContext, Source


class Config(ControllerDeviceConfig):
    """The traffic-signal controller as a device; its model is the top-level ``traffic`` section."""

    driver: Literal["traffic"]


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One source per configured intersection when a traffic device is enabled."""
    enabled = [c for c in configs if c.enabled]
    if not enabled:
        return []
    if getattr(ctx.site, "traffic", None) is None:
        raise ConfigError(
            "<config>", [f"devices: traffic device {enabled[0].name!r} needs a top-level traffic section"]
        )
    sources, _ = traffic_sources(ctx.site, ctx.services.get(PinFactories))
    return list(sources)
