"""The traffic intersections as supervised sources of the agent runtime.

Each intersection ticks in its own thread at :data:`TICK_S` on the monotonic clock (the envelope is
synchronous and must not wait for the event loop); its reports (refusals, flash alarms, state
changes) go through a bounded queue to the reading sink. The time-of-day schedule is checked on
each tick; a new entry takes effect at the controller's next cycle, and a mode or plan set by the
centre holds until the schedule's next change point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import threading
import time
import zoneinfo
from typing import Any

from control.traffic.commands import TrafficCommands
from control.traffic.config import IntersectionConfig, ModbusOutputConfig, ScheduleEntry
from control.traffic.runner import Intersection
from control.traffic.schedule import active_entry
from drivers.gpio.factory import PinFactories
from drivers.signals.base import SignalOutput
from kernel.commands import CommandOutcome
from kernel.errors import ConfigError
from kernel.readings import Priority, Reading
from kernel.source import RunContext

TICK_S = 0.1
QUEUE_MAX = 10_000


def build_output(ix: IntersectionConfig, pins: PinFactories | None = None) -> SignalOutput:
    """The configured signal output of one intersection (Modbus or GPIO; SUMO is only for the rig).

    GPIO heads take their pin factory from ``pins`` (the run's pin factories), never gpiozero's global.
    """
    from drivers.signals.gpio import GpioSignalHeads
    from drivers.signals.modbus import ModbusSignalController, TransportRegisterLink
    from drivers.transports.tcp import TcpTransport

    out = ix.output
    groups = tuple(g.name for g in ix.groups)
    if isinstance(out, ModbusOutputConfig):
        transport = TcpTransport(out.host, out.port, connect_timeout=out.timeout_s)
        return ModbusSignalController(groups, TransportRegisterLink(transport, out.unit, out.timeout_s))
    if out is not None and out.driver == "gpio":
        return GpioSignalHeads(out.heads, pin_factory=(pins or PinFactories()).get("auto"))
    raise ConfigError(
        "traffic", [f"intersections.{ix.name}.output: a field intersection needs modbus or gpio"]
    )


class TrafficSource:
    """Runs one intersection: ticks it, applies the schedule, forwards its reports."""

    def __init__(
        self, ix: IntersectionConfig, tz: str, output: SignalOutput | None = None, pins: PinFactories | None = None
    ) -> None:
        self.name = f"traffic:{ix.name}"
        self.ix = ix
        self._tz = zoneinfo.ZoneInfo(tz)
        self._reports: queue.Queue[Reading] = queue.Queue(QUEUE_MAX)
        self.intersection = Intersection(ix, output or build_output(ix, pins), time.monotonic, self._report)
        self._stop = threading.Event()
        self._entry: ScheduleEntry | None = None
        self.commands: TrafficCommands | None = None

    def apply_command(self, body: dict[str, Any]) -> CommandOutcome:
        """A centre command of kind ``traffic`` (routed by intersection name to any of the site's)."""
        handler = self.commands or TrafficCommands({self.ix.name: self.intersection})
        return handler.apply_command(body)

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
        if entry == self._entry:
            return  # a mode set by the centre holds until the schedule's next change point
        self._entry = entry
        c = self.intersection.controller
        if (entry.mode, entry.plan) != (c.next_mode, c.next_plan.name):
            c.set_mode(entry.mode, next(p for p in self.ix.plans if p.name == entry.plan))

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
        with inter.lock:  # the output's link belongs to this thread
            inter.envelope.latch("agent_stopped", "the agent is stopping")

    def start(self) -> threading.Thread:
        """Start ticking in a thread of its own."""
        self._stop.clear()
        thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        """Stop ticking and wait for the thread."""
        self._stop.set()
        thread.join(5)

    def drain(self) -> list[Reading]:
        """Reports waiting to go to the sink."""
        batch: list[Reading] = []
        while True:
            try:
                batch.append(self._reports.get_nowait())
            except queue.Empty:
                return batch

    async def run(self, ctx: RunContext) -> None:
        """Tick in a thread until cancelled; drain reports to the sink."""
        thread = self.start()
        try:
            while thread.is_alive():
                batch = self.drain()
                if batch:
                    await ctx.sink.put(batch)
                await asyncio.sleep(0.2)
        finally:
            await asyncio.to_thread(self.stop, thread)


def traffic_sources(site: Any, pins: PinFactories | None = None) -> tuple[list[TrafficSource], TrafficCommands]:
    """Sources for every configured intersection, and the command handler the sync layer calls.

    ``pins``: the run's pin factories, for intersections with GPIO signal heads.
    """
    traffic = getattr(site, "traffic", None)
    if traffic is None:
        return [], TrafficCommands({})
    sources = [TrafficSource(ix, site.site.timezone, pins=pins) for ix in traffic.intersections]
    commands = TrafficCommands({s.ix.name: s.intersection for s in sources})
    for s in sources:
        s.commands = commands
    return sources, commands
