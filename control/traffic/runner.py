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
from control.traffic.keep import KeptPlan, config_fingerprint
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
        self._lapsed: tuple[float, float] | None = None
        self.fingerprint = config_fingerprint(ix)  # of the config as built, not as changed by commands
        self.kept: KeptPlan | None = None  # the centre's plan, taken up again on start and clear
        self.restored = False  # ``kept`` came from the state folder (a restart), not a command
        self.on_kept: Callable[[KeptPlan | None], None] = lambda plan: None  # persist it (or drop: None)
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
            self._resume()

    def coordinate(self, plan: KeptPlan, restored: bool = False) -> None:
        """Take up the centre's coordination plan (checked by the caller like the command) at the
        coordinated stage's first start from its ``from_s``, and keep it for a restart or a clear."""
        with self.lock:
            self.kept, self.restored = plan, restored
            self.controller.set_coordination(plan.cycle_s, plan.start_s, plan.splits, plan.from_s, plan.until_s)
            if not restored:
                self.on_kept(plan)

    def _resume(self) -> None:
        """A fresh controller starts on the configured plan: give it the kept plan again, unless
        that has run out meanwhile."""
        plan = self.kept
        if plan is None:
            return
        if plan.expired(self._time()):
            self.drop_kept("expired", f"command {plan.command_id} was valid until {plan.until_s:.0f}")
            return
        self.controller.set_coordination(plan.cycle_s, plan.start_s, plan.splits, plan.from_s, plan.until_s)

    def drop_kept(self, why: str, detail: str) -> None:
        """Forget the kept plan (one log line and a ``coordination.dropped`` event)."""
        plan = self.kept
        self.kept = None
        self.on_kept(None)
        self.report_dropped(why, detail, plan.command_id if plan is not None else "")

    def report_dropped(self, why: str, detail: str, command_id: str = "") -> None:
        """Say that a centre plan is no longer run (``why``: expired, other_config, corrupt, ...)."""
        log.warning("%s: centre coordination plan dropped (%s): %s", self.ix.name, why, detail)
        meta = {"detail": detail}
        if command_id:
            meta["command_id"] = command_id
        self._report(
            Reading(self.ix.name, "coordination.dropped", why, time.time(), priority=Priority.EVENT, meta=meta)
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
            self._resume()

    def _time(self) -> float | None:
        return self.time_base() if self.time_base is not None else None

    def _report_coordination(self) -> None:
        """An event when the junction joins or leaves coordination (its time base came or went), and
        one when it takes up a plan from the centre (``coordination.plan``)."""
        taken = self.controller.taken_up
        if taken is not None and taken != self._taken_up:
            self._taken_up = taken
            when, cycle, start = taken
            meta = {"cycle_s": f"{cycle:g}", "start_s": f"{start:g}", "taken_at": f"{when:.1f}"}
            if self.kept is not None:
                meta["command_id"] = self.kept.command_id
                meta["source"] = "kept" if self.restored else "command"
            self._report(
                Reading(
                    self.ix.name,
                    "coordination.plan",
                    f"cycle {cycle:g} s, start {start:g} s",
                    time.time(),
                    priority=Priority.EVENT,
                    meta=meta,
                )
            )
        lapsed = self.controller.lapsed
        if lapsed is not None and lapsed != self._lapsed:
            self._lapsed = lapsed
            if self.kept is not None and self.kept.until_s == lapsed[1]:
                self.drop_kept("expired", f"valid until {lapsed[1]:.0f}: back on the configured plan")
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
