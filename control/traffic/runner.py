"""One intersection at run time: envelope, detectors and controller, ticked once per control period."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from control.traffic.config import IntersectionConfig, PlanConfig
from control.traffic.controller import Mode, StageController, TimeBase
from control.traffic.detectors import DetectorBoard
from control.traffic.envelope import SafetyEnvelope
from drivers.signals.base import SignalOutput
from kernel.errors import SafetyViolation
from kernel.readings import Priority, Reading

log = logging.getLogger("kbe.traffic")


class Intersection:
    """Wires the controller to the envelope (never to the output) and turns any doubt into flash."""

    def __init__(
        self,
        ix: IntersectionConfig,
        output: SignalOutput,
        clock: Callable[[], float],
        report: Callable[[Reading], None] | None = None,
        mode: Mode = "fixed",
        plan: PlanConfig | None = None,
        defer_flash: bool = False,
        time_base: TimeBase | None = None,
    ) -> None:
        self.ix = ix
        self.time_base = time_base
        self._clock = clock
        self._report = report or (lambda r: None)
        self._controller_buttons = {
            int((d.input or "").split(":")[1]): d.name
            for d in ix.detectors
            if d.kind == "button" and d.source is None and (d.input or "").startswith("controller:")
        }
        self.envelope = SafetyEnvelope(ix, output, clock, report, defer_flash=defer_flash)
        self.board = DetectorBoard(ix.detectors, clock)
        self.controller = StageController(ix, self.envelope, self.board, clock, mode, plan, self._time)
        self._coordinated: bool | None = None
        self._taken_up: tuple[float, float, float] | None = None
        self.lock = threading.RLock()  # ticks and centre commands come from different threads

    def start(self) -> None:
        """Leave the start-up flash (all red, then the first stage after the clearances).

        The controller starts its start-up interval now too, so the all-red it times is the one the
        envelope just began (not the one since the controller was built).
        """
        with self.lock:
            self.envelope.start()
            c = self.controller
            self.controller = StageController(
                self.ix, self.envelope, self.board, self._clock, c.next_mode, c.next_plan, self._time
            )

    def tick(self) -> None:
        """One control period: the controller asks, the envelope decides, the read-back is checked."""
        with self.lock:
            self._tick()

    def _tick(self) -> None:
        for name, fault in self.board.check_health().items():
            if fault is not None:
                log.warning(
                    "%s: detector %s failed (%s): its group runs to max green", self.ix.name, name, fault
                )
            self._report(
                Reading(
                    self.ix.name,
                    "detector.fault",
                    fault or "ok",
                    time.time(),
                    priority=Priority.EVENT,
                    meta={"detector": name},
                )
            )
        if self.envelope.latched is None:
            try:
                self.controller.step()
                self._report_coordination()
            except SafetyViolation as exc:
                self.envelope.latch("controller_refused", f"the controller asked for a refused state: {exc}")
            except Exception as exc:  # any doubt about the controller means flash
                log.exception("%s: controller failed", self.ix.name)
                self.envelope.latch("internal_error", f"{type(exc).__name__}: {exc}")
        self.envelope.check()
        for i in self.envelope.take_calls():
            button = self._controller_buttons.get(i)
            if button is not None:  # a press on the controller's own button input i
                self.board.loop(button, True)
                self.board.loop(button, False)

    def clear(self, operator: str) -> None:
        """Operator reset: all red, then a fresh controller from its start-up interval."""
        with self.lock:
            c = self.controller
            self.envelope.clear(operator)
            self.controller = StageController(
                self.ix, self.envelope, self.board, self._clock, c.mode, c.plan, self._time
            )

    def _time(self) -> float | None:
        return self.time_base() if self.time_base is not None else None

    def _report_coordination(self) -> None:
        """An event when the junction joins or leaves coordination (its time base came or went), and
        one when it takes up a plan from the centre (``coordination.plan``)."""
        taken = self.controller.taken_up
        if taken is not None and taken != self._taken_up:
            self._taken_up = taken
            when, cycle, start = taken
            self._report(
                Reading(
                    self.ix.name,
                    "coordination.plan",
                    f"cycle {cycle:g} s, start {start:g} s",
                    time.time(),
                    priority=Priority.EVENT,
                    meta={"cycle_s": f"{cycle:g}", "start_s": f"{start:g}", "taken_at": f"{when:.1f}"},
                )
            )
        now = self.controller.coordinated
        if self.ix.coordination is None or now == self._coordinated:
            return
        self._coordinated = now
        if not now:
            log.warning(
                "%s: no synchronised clock: running uncoordinated (%s)", self.ix.name, self.controller.mode
            )
        self._report(
            Reading(
                self.ix.name,
                "coordination",
                "coordinated" if now else "free",
                time.time(),
                priority=Priority.EVENT,
                meta={"reason": "clock synchronised" if now else "clock not synchronised"},
            )
        )
