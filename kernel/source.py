"""What the runtime supervises: sources of readings (a Modbus bus, a serial sensor, a camera, a controller)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.services import Services
from kernel.sink import ReadingSink
from kernel.site import SiteView


@dataclass
class RunContext:
    """What every source gets from the runtime: site, sink, clock, metrics, log and the services.

    ``services`` holds what sources share in this run (GPIO banks, pin factories, model
    registries): see :mod:`kernel.services`.
    """

    site: SiteView
    sink: ReadingSink
    clock: Clock = field(default_factory=Clock)
    metrics: Metrics = field(default_factory=lambda: Metrics())
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("kbe"))
    services: Services = field(default_factory=Services)


class Source(Protocol):
    """A supervised task producing readings. ``run`` runs until cancelled; raising means 'restart me'."""

    name: str

    async def run(self, ctx: RunContext) -> None:
        """Acquire until cancelled."""
        ...
