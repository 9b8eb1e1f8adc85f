"""Where acquisition hands readings over: a bounded, async sink in front of the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kernel.readings import Reading


class ReadingSink(Protocol):
    """Accepts readings from drivers, controllers and models.

    ``put`` returns once the readings are queued for the store; it waits (backpressure) only when
    the bounded queue in front of the store is full, never on the network.
    """

    async def put(self, readings: Sequence[Reading]) -> None:
        """Queue readings for the store."""
        ...


class ListSink:
    """A sink that keeps readings in a list; for tests and technician tools."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def put(self, readings: Sequence[Reading]) -> None:
        """Append the readings."""
        self.readings.extend(readings)
