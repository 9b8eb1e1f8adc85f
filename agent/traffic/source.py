"""The traffic intersections as supervised sources of the agent runtime.

Each intersection ticks in its own thread at :data:`TICK_S` on the monotonic clock (the envelope is
synchronous and must not wait for the event loop); its reports (refusals, flash alarms, state
changes) go through a bounded queue to the reading sink. The time-of-day schedule is applied on
each tick and takes effect at the controller's next cycle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import threading
import time
import zoneinfo
from typing import Any

from agent.errors import ConfigError
from agent.readings import Priority, Reading
from agent.source import RunContext
from agent.traffic.commands import TrafficCommands
from agent.traffic.config import IntersectionConfig, ModbusOutputConfig
from agent.traffic.runner import Intersection
from agent.traffic.schedule import active_entry
from drivers.signals.base import SignalOutput

TICK_S = 0.1
QUEUE_MAX = 10_000


def build_output(ix: IntersectionConfig, pin_factory: Any = None) -> SignalOutput:
    """The configured signal output of one intersection (Modbus or GPIO; SUMO is only for the rig)."""
    from drivers.signals.gpio import GpioSignalHeads
    from drivers.signals.modbus import ModbusSignalController, PymodbusTcpLink

    out = ix.output
    groups = tuple(g.name for g in ix.groups)
    if isinstance(out, ModbusOutputConfig):
        return ModbusSignalController(groups, PymodbusTcpLink(out.host, out.port, out.unit, out.timeout_s))
    if out is not None and out.driver == "gpio":
        return GpioSignalHeads(out.heads, pin_factory=pin_factory)
    raise ConfigError(
        "traffic", [f"intersections.{ix.name}.output: a field intersection needs modbus or gpio"]
    )


class TrafficSource:
    """Runs one intersection: ticks it, applies the schedule, forwards its reports."""

    def __init__(self, ix: IntersectionConfig, tz: str, output: SignalOutput | None = None) -> None:
        self.name = f"traffic:{ix.name}"
        self.ix = ix
        self._tz = zoneinfo.ZoneInfo(tz)
        self._reports: queue.Queue[Reading] = queue.Queue(QUEUE_MAX)
        self.intersection = Intersection(ix, output or build_output(ix), time.monotonic, self._report)
        self._stop = threading.Event()

    def _report(self, reading: Reading) -> None:
        try:
            self._reports.put_nowait(reading)
        except queue.Full:
            if reading.priority == Priority.ALARM:
                self._reports.get_nowait()
                self._reports.put_nowait(reading)

    def _apply_schedule(self) -> None:
        if self.ix.schedule is None:
            return
        entry = active_entry(self.ix.schedule, dt.datetime.now(self._tz))
        c = self.intersection.controller
        if (entry.mode, entry.plan) != (c.mode, c.plan.name):
            plan = next(p for p in self.ix.plans if p.name == entry.plan)
            pending = getattr(c, "_pending", None)
            if pending is None or pending != (entry.mode, plan):
                c.set_mode(entry.mode, plan)

    def _loop(self) -> None:
        inter = self.intersection
        inter.start()
        shown_before: dict[str, Any] = {}
        deadline = time.monotonic()
        while not self._stop.is_set():
            self._apply_schedule()
            inter.tick()
            shown = {n: i.value for n, i in inter.envelope.shown().items()}
            if shown != shown_before:
                text = " ".join(f"{n}={v}" for n, v in sorted(shown.items()))
                self._report(
                    Reading(self.ix.name, "signal.state", text, time.time(), priority=Priority.EVENT)
                )
                shown_before = shown
            deadline += TICK_S
            self._stop.wait(max(0.0, deadline - time.monotonic()))
            with inter.lock:
                inter.envelope.watchdog()

    async def run(self, ctx: RunContext) -> None:
        """Tick in a thread until cancelled; drain reports to the sink."""
        thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                batch: list[Reading] = []
                while True:
                    try:
                        batch.append(self._reports.get_nowait())
                    except queue.Empty:
                        break
                if batch:
                    await ctx.sink.put(batch)
                await asyncio.sleep(0.2)
        finally:
            self._stop.set()
            await asyncio.to_thread(thread.join, 5)
            self.intersection.envelope.latch("agent_stopped", "the agent is stopping")


def traffic_sources(site: Any) -> tuple[list[TrafficSource], TrafficCommands]:
    """Sources for every configured intersection, and the command handler the sync layer calls."""
    traffic = getattr(site, "traffic", None)
    if traffic is None:
        return [], TrafficCommands({})
    sources = [TrafficSource(ix, site.site.timezone) for ix in traffic.intersections]
    return sources, TrafficCommands({s.ix.name: s.intersection for s in sources})
