"""What the runtime supervises: sources of readings (a Modbus bus, a serial sensor, a camera, a controller)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from kernel.clock import Clock
from kernel.detectors import DetectorBus
from kernel.metrics import Metrics
from kernel.pace import Pace
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
    detectors: DetectorBus = field(default_factory=DetectorBus)
    """Zone counts and loop inputs on their way to the traffic controller (kernel/detectors.py)."""
    pace: Pace = field(default_factory=Pace)
    """How much slower than configured sources poll while the uplink cannot keep up (kernel/pace.py)."""


class Source(Protocol):
    """A supervised task producing readings. ``run`` runs until cancelled; raising means 'restart me'."""

    name: str

    async def run(self, ctx: RunContext) -> None:
        """Acquire until cancelled."""
        ...


@runtime_checkable
class Liveness(Protocol):
    """A source whose work runs where the supervisor cannot see it hang (its own thread, a step that
    awaits a device) says so here; the agent feeds the systemd watchdog only while none is stalled."""

    def stalled(self, now_mono: float) -> str | None:
        """Why the source looks hung at ``now_mono`` (``time.monotonic()``), or None when it is alive."""
        ...
