"""Detector input: loop actuations and camera-zone counts, the adaptive and actuated modes' inputs.

In the agent, cameras and ``gpio`` loop inputs publish on the run context's detector bus
(:mod:`kernel.detectors`) and each intersection's own thread applies what its detectors' sources
sent (:class:`DetectorInbox`) before every tick. The SUMO rig and tests feed :class:`DetectorBoard`
directly (:meth:`DetectorBoard.loop`, :meth:`DetectorBoard.zone`) or as readings with ``device`` = the detector name and points ``loop.occupied`` (bool),
``zone.count``, ``zone.halting`` (vehicles) and ``zone.queue_m`` (metres). Zone data older than
``stale_s`` counts as missing, and the adaptive mode falls back to actuated timing.

Detector health is checked too: a loop occupied without a break for ``stuck_on_s`` (a stuck
relay, a parked vehicle), one that saw nothing for ``stuck_off_s`` while the junction's other loops
counted so many vehicles that this loop should have seen ``stuck_off_expected`` of them at its own
learned share of the junction's actuations (a cut feeder, a dead card: a quiet left bay is judged
against its own rate, not the busy through lanes'), or one that changed state more than
``chatter_per_min`` times in a minute (a loose connection) is *failed*. A failed loop is left out:
its group keeps demand and runs to its maximum green (the "max recall" of a failed detector), so an
intersection whose detectors have all failed runs every stage to its maximum, a fixed-time plan.
A failed loop that behaves again for ``stuck_off_s`` (a break after stuck-on, a vehicle after
stuck-off, a quiet minute after chatter) is healthy again.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from control.traffic.config import DetectorConfig
from kernel.detectors import ApproachSignal, DetectorEvent, LoopPresence, ZoneCount
from kernel.readings import Reading


@dataclass
class ZoneState:
    """The latest camera-zone (or E2) measurement."""

    count: int = 0
    halting: int = 0
    queue_m: float = 0.0
    ts: float = -math.inf


class DetectorBoard:
    """Latest detector state per signal group, timestamped on the controller's clock."""

    STUCK_ON_S = 240.0
    STUCK_OFF_S = 600.0
    STUCK_OFF_EXPECTED = 8.0  # vehicles this loop should have seen meanwhile (Poisson: P(none) < 0.04 %)
    CHATTER_PER_MIN = 120

    def __init__(
        self, detectors: Iterable[DetectorConfig], clock: Callable[[], float], stale_s: float = 5.0
    ) -> None:
        self._clock = clock
        self.stale_s = stale_s
        self._group = {d.name: d.group for d in detectors}
        self._kind = {d.name: d.kind for d in detectors}
        self._last_on: dict[str, float] = {n: -math.inf for n, k in self._kind.items() if k == "loop"}
        self._occupied: set[str] = set()
        self._zones: dict[str, ZoneState] = {n: ZoneState() for n, k in self._kind.items() if k == "zone"}
        start = clock()
        self._on_since: dict[str, float] = {}
        self._seen: dict[str, tuple[float, int]] = dict.fromkeys(self._last_on, (start, 0))
        self._edges: dict[str, collections.deque[float]] = {
            n: collections.deque(maxlen=self.CHATTER_PER_MIN + 1) for n in self._last_on
        }
        self._actuations = 0
        self._own: dict[str, int] = dict.fromkeys(self._last_on, 0)  # each loop's actuations
        self.failed: dict[str, str] = {}  # loop -> stuck_on | stuck_off | chattering
        self._buttons = {n: self._group[n] for n, k in self._kind.items() if k == "button"}
        self._pressed: set[str] = set()
        self.calls: dict[str, float] = {}  # pedestrian group -> when its waiting call was placed

    def loop(self, name: str, occupied: bool) -> None:
        """A loop's presence now (or a push button's: pressed); a loop that stays occupied keeps its
        gap at zero."""
        if name in self._buttons:
            if occupied and name not in self._pressed:
                self.calls.setdefault(self._buttons[name], self._clock())
            (self._pressed.add if occupied else self._pressed.discard)(name)
            return
        if name not in self._last_on:
            return
        now = self._clock()
        if occupied:
            if name not in self._occupied:
                self._edges[name].append(now)
                self._on_since[name] = now
                self._actuations += 1
                self._own[name] += 1
                self._seen[name] = (now, self._actuations)
            self._last_on[name] = now
            self._occupied.add(name)
        else:
            if name in self._occupied:
                self._edges[name].append(now)
            self._occupied.discard(name)
            self._on_since.pop(name, None)

    def actuations(self) -> dict[str, int]:
        """Vehicles each loop has counted since the board started (its actuations)."""
        return dict(self._own)

    def has_buttons(self, group: str) -> bool:
        """True when pedestrians call ``group``'s walk with a push button (no button: it always walks)."""
        return group in self._buttons.values()

    def served(self, group: str) -> None:
        """The walk of ``group`` started: its call is answered."""
        self.calls.pop(group, None)

    def check_health(self) -> dict[str, str | None]:
        """Update :attr:`failed`; return the loops whose health changed (fault, or None when healthy)."""
        now = self._clock()
        changed: dict[str, str | None] = {}
        for name in self._last_on:
            fault = self._fault(name, now)
            if fault != self.failed.get(name):
                changed[name] = fault
                if fault is None:
                    self.failed.pop(name, None)
                else:
                    self.failed[name] = fault
        return changed

    def _fault(self, name: str, now: float) -> str | None:
        was = self.failed.get(name)
        on = self._on_since.get(name)
        if on is not None and now - on >= self.STUCK_ON_S:
            return "stuck_on"
        edges = self._edges[name]
        if len(edges) > self.CHATTER_PER_MIN and now - edges[0] <= 60.0:
            return "chattering"
        if was == "chattering" and edges and now - edges[-1] < 60.0:
            return "chattering"
        seen_at, seen_count = self._seen[name]
        if now - seen_at >= self.STUCK_OFF_S and self._missed(name, seen_count) >= self.STUCK_OFF_EXPECTED:
            return "stuck_off"
        if was == "stuck_on" and on is not None:
            return was
        return None

    def _missed(self, name: str, seen_count: int) -> float:
        """Vehicles ``name`` should have counted since it last saw one: the others' actuations since
        then times its share of the junction's actuations up to then (Laplace-smoothed, so a loop with
        no history starts at an equal share)."""
        share = (self._own[name] + 1) / (seen_count + len(self._own))
        return (self._actuations - seen_count) * share

    def _healthy(self, name: str) -> bool:
        return name not in self.failed

    def refresh_occupied(self) -> None:
        """Loops still occupied saw a vehicle now (called once per tick by an edge-fed owner)."""
        now = self._clock()
        for name in self._occupied:
            self._last_on[name] = now

    def zone(self, name: str, count: int, halting: int, queue_m: float) -> None:
        """A zone's vehicle count, halting vehicles and queue length now."""
        if name in self._zones:
            self._zones[name] = ZoneState(count, halting, queue_m, self._clock())

    def feed(self, readings: Iterable[Reading]) -> None:
        """Apply readings from the camera pipeline or a detector card (unknown devices are ignored)."""
        zones: dict[str, dict[str, float]] = {}
        for r in readings:
            if r.point == "loop.occupied":
                self.loop(r.device, bool(r.value))
            elif r.point in ("zone.count", "zone.halting", "zone.queue_m") and isinstance(
                r.value, int | float
            ):
                zones.setdefault(r.device, {})[r.point.split(".")[1]] = float(r.value)
        for name, z in zones.items():
            old = self._zones.get(name, ZoneState())
            self.zone(
                name,
                int(z.get("count", old.count)),
                int(z.get("halting", old.halting)),
                z.get("queue_m", old.queue_m),
            )

    def gap(self, groups: Iterable[str]) -> float:
        """Seconds since any loop of ``groups`` last saw a vehicle (inf with no loop)."""
        wanted = set(groups)
        if any(self._group[n] in wanted and self._healthy(n) for n in self._occupied):
            return 0.0
        last = max(
            (t for n, t in self._last_on.items() if self._group[n] in wanted and self._healthy(n)),
            default=-math.inf,
        )
        return self._clock() - last

    def has_loops(self, groups: Iterable[str]) -> bool:
        """True when some healthy loop watches one of ``groups`` (a failed one counts as none)."""
        wanted = set(groups)
        return any(self._group[n] in wanted and self._healthy(n) for n in self._last_on)

    def zones_fresh(self, groups: Iterable[str]) -> bool:
        """True when every zone of ``groups`` reported within ``stale_s``."""
        wanted = set(groups)
        zs = [z for n, z in self._zones.items() if self._group[n] in wanted]
        return bool(zs) and all(self._clock() - z.ts <= self.stale_s for z in zs)

    def halting(self, groups: Iterable[str]) -> int:
        """Halting vehicles in the zones of ``groups`` (0 when stale)."""
        return sum(z.halting for z in self._fresh(groups))

    def count(self, groups: Iterable[str]) -> int:
        """Vehicles in the zones of ``groups`` (0 when stale)."""
        return sum(z.count for z in self._fresh(groups))

    def queue_m(self, groups: Iterable[str]) -> float:
        """Longest queue in the zones of ``groups`` (0 when stale)."""
        return max((z.queue_m for z in self._fresh(groups)), default=0.0)

    def _fresh(self, groups: Iterable[str]) -> list[ZoneState]:
        wanted = set(groups)
        now = self._clock()
        return [z for n, z in self._zones.items() if self._group[n] in wanted and now - z.ts <= self.stale_s]


class DetectorInbox:
    """Detector-bus events for one intersection, kept until its thread applies them to its board.

    :meth:`on_event` runs on the publisher's thread (camera task, gpiozero callback) and only maps
    the event to a configured detector and queues it (bounded: the oldest goes first).
    """

    def __init__(self, detectors: Iterable[DetectorConfig], maxlen: int = 1000) -> None:
        self._by_source: dict[tuple[str, str, str], str] = {
            ("zone" if d.kind == "zone" else "loop", d.source, d.input or d.name): d.name
            for d in detectors
            if d.source is not None
        }
        self._events: collections.deque[tuple[str, DetectorEvent]] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.received = 0

    @property
    def wanted(self) -> bool:
        """True when some detector of this intersection has a source on the bus."""
        return bool(self._by_source)

    def on_event(self, event: DetectorEvent) -> None:
        """Keep ``event`` if one of this intersection's detectors is fed by it."""
        if isinstance(event, ZoneCount):
            key = ("zone", event.source, event.zone)
        elif isinstance(event, ApproachSignal):
            return  # what the intersections themselves publish, for the cameras
        else:
            key = ("loop", event.source, event.input)
        name = self._by_source.get(key)
        if name is not None:
            with self._lock:
                self._events.append((name, event))
                self.received += 1

    def apply(self, board: DetectorBoard) -> int:
        """Apply what arrived to ``board`` (on the intersection's thread, once per tick); how many events.

        Loop inputs arrive as edges, so a loop that stays occupied is refreshed here on every tick:
        once it frees, its gap counts from (within a tick of) when the vehicle left.
        """
        with self._lock:
            events = list(self._events)
            self._events.clear()
        for name, ev in events:
            if isinstance(ev, LoopPresence):
                board.loop(name, ev.occupied)
            elif isinstance(ev, ZoneCount):
                board.zone(name, ev.count, ev.halting, ev.queue_m)
        board.refresh_occupied()
        return len(events)
