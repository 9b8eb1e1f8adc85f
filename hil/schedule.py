"""The fault timeline: when each fault starts and ends, executed against the rig's clock.

The scheduler only knows *when*; what a fault does is the job of the :class:`Injector` the runner
passes in (emulator toggles, broker stop/start, SIGKILL and restart of the agent). Every action's
actual wall time is recorded, so expectations are checked against what really happened, not
against the plan (a loaded machine starts things late).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hil.rig import AgentKill, FaultBase, Reboot, ReceiverRestart, Rig, TcpDrop, WindowFault

log = logging.getLogger("kbe.hil")

INSTANT_WITH_DOWNTIME = (AgentKill, ReceiverRestart, Reboot)


@dataclass(frozen=True, order=True)
class Action:
    """One step of the timeline: ``phase`` is "start" or "end" of fault number ``index``."""

    at_s: float
    order: int  # ends before starts at the same moment, then rig order
    index: int
    phase: str


@dataclass
class FaultWindow:
    """What happened for one fault: its planned and actual wall-clock start and end."""

    index: int
    kind: str
    target: str | None
    planned_start_s: float
    planned_end_s: float
    start_wall: float | None = None
    end_wall: float | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        """``dead(th1) 30-90 s``"""
        who = f"({self.target})" if self.target else ""
        span = (
            f"{self.planned_start_s:g} s"
            if self.planned_end_s == self.planned_start_s
            else f"{self.planned_start_s:g}-{self.planned_end_s:g} s"
        )
        return f"{self.kind}{who} at {span}"


class Injector(Protocol):
    """Carries out faults; ``start`` and ``end`` may block briefly (process restarts)."""

    async def start(self, fault: Any) -> None: ...

    async def end(self, fault: Any) -> None: ...


def target_of(fault: FaultBase) -> str | None:
    """The device or line a fault hits, or None for system-wide faults."""
    if isinstance(fault, TcpDrop):
        return fault.line
    return getattr(fault, "device", None)


def plan(rig: Rig) -> tuple[list[Action], list[FaultWindow]]:
    """The sorted actions of a rig and an empty window record per fault."""
    actions: list[Action] = []
    windows: list[FaultWindow] = []
    for i, f in enumerate(rig.faults):
        start, end = f.start(), f.end(rig.duration_s)
        windows.append(FaultWindow(i, f.kind, target_of(f), start, end))
        actions.append(Action(start, 1, i, "start"))
        if isinstance(f, (WindowFault, *INSTANT_WITH_DOWNTIME)):
            actions.append(Action(end, 0, i, "end"))
    return sorted(actions), windows


class FaultScheduler:
    """Runs a rig's fault timeline from ``t0`` (a ``time.monotonic()`` value)."""

    def __init__(
        self,
        rig: Rig,
        injector: Injector,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rig = rig
        self.injector = injector
        self.actions, self.windows = plan(rig)
        self._wall = wall
        self._mono = mono
        self.done: list[tuple[Action, float]] = []

    async def run(self, t0: float) -> None:
        """Execute every action at its time; returns after the last one (or when cancelled)."""
        for action in self.actions:
            delay = t0 + action.at_s - self._mono()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._do(action)

    async def _do(self, action: Action) -> None:
        fault = self.rig.faults[action.index]
        window = self.windows[action.index]
        log.info("t=%.1f s: %s %s", action.at_s, action.phase, window.label)
        try:
            if action.phase == "start":
                window.start_wall = self._wall()
                await self.injector.start(fault)
                if window.planned_end_s == window.planned_start_s:
                    window.end_wall = self._wall()
            else:
                await self.injector.end(fault)
                window.end_wall = self._wall()
        except Exception as exc:  # a failed injection is reported, the run goes on
            log.exception("fault %s: %s failed", window.label, action.phase)
            window.error = f"{action.phase} failed: {exc}"
        self.done.append((action, self._wall()))

    async def finish(self) -> None:
        """End every fault that started but has not ended (the run was cut short)."""
        for w in self.windows:
            if w.start_wall is not None and w.end_wall is None:
                await self._do(Action(w.planned_end_s, 0, w.index, "end"))
