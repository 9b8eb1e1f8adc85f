"""The detector bus: what cameras and loop inputs see on the road, handed to the traffic controller,
and the signal each camera zone's approach is shown, handed back to the camera.

A service of the run context (``ctx.detectors``), one per agent. Publishers (a camera's zone counts,
a ``gpio`` device's loop inputs, an intersection's commanded signal) call :meth:`DetectorBus.publish`
from any thread; subscribers (each intersection, each camera) get every event on the publisher's
thread and must return at once: they copy it (into a bounded queue, or one flag) for their own
thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("kbe.detectors")


@dataclass(frozen=True)
class ZoneCount:
    """A camera zone now: vehicles in it, vehicles halting (the queue), queue length if known."""

    source: str
    zone: str
    count: int
    halting: int
    queue_m: float = 0.0


@dataclass(frozen=True)
class LoopPresence:
    """A loop detector input's state now (an edge, or a periodic refresh)."""

    source: str
    input: str
    occupied: bool


@dataclass(frozen=True)
class ApproachSignal:
    """The signal an intersection now shows the approach a camera zone watches.

    ``stop`` is True while the group is not green (red, amber, flashing): vehicles there may stand
    still, so the camera must not learn them as road. Published by the intersection for each of
    its zone detectors fed by a camera (``source`` the camera, ``zone`` its zone).
    """

    source: str
    zone: str
    stop: bool


DetectorEvent = ZoneCount | LoopPresence | ApproachSignal
Listener = Callable[[DetectorEvent], None]


class DetectorBus:
    """Fan-out of detector events to subscribers; a failing subscriber is logged, never fatal."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self, listener: Listener) -> None:
        """Receive every event from now on."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop receiving events."""
        with self._lock:
            self._listeners = [x for x in self._listeners if x is not listener]

    def publish(self, event: DetectorEvent) -> None:
        """Hand ``event`` to every subscriber."""
        with self._lock:
            targets = list(self._listeners)
            self.published += 1
        for listener in targets:
            try:
                listener(event)
            except Exception:
                log.exception("detector listener %r failed", listener)
