"""The agent's local health and metrics endpoint: ``/metrics`` (Prometheus text) and ``/health`` (JSON).

The server is :class:`kernel.health_http.HealthServer`, shared with the centre's receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kernel.health_http import HealthServer as _Server
from kernel.metrics import Metrics


class HealthServer(_Server):
    """A minimal HTTP/1.0 server on the loopback for a technician's laptop or a Prometheus agent."""

    def __init__(self, listen: str, metrics: Metrics, health: Callable[[], dict[str, Any]]) -> None:
        super().__init__(
            listen, metrics.render, health, name="health.listen",
            hint=" (is another agent running with this config?)",
        )  # fmt: skip
