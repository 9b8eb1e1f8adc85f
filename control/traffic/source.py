"""The traffic intersections as supervised sources of the agent runtime.

Each intersection is owned by its own thread, which ticks it at :data:`TICK_S` on the monotonic
clock (the envelope is synchronous and must not wait for the event loop) and is the only one to
touch its controller, envelope and signal output. Before each tick the thread applies what its
detectors' sources published on the detector bus (camera zones, loop inputs) and the centre's
commands handed to it (:meth:`TrafficSource.submit`), and answers those from there; a command also
wakes it between ticks. Its reports (refusals, flash alarms, state changes) go through a bounded
queue to the reading sink, and so do its loops' counts every ``counts_s``
(:mod:`control.traffic.counts`). The signal each camera-fed zone detector's group shows goes back on the bus as :class:`kernel.detectors.ApproachSignal` (on a change and every second), so the camera
does not learn vehicles standing at a red as road. The time-of-day schedule is checked on each tick; a new entry takes
effect at the controller's next cycle, and a mode or plan set by the centre holds until the
schedule's next change point.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import math
import queue
import threading
import time
import zoneinfo
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from control.traffic.commands import TrafficCommands, check_coordinate
from control.traffic.config import (
    CONTROL_TICK_S,
    GpioOutputConfig,
    IntersectionConfig,
    ModbusOutputConfig,
    ScheduleEntry,
)
from control.traffic.counts import CountReporter
from control.traffic.detectors import DetectorInbox
from control.traffic.keep import KeptPlan, PlanKeeper
from control.traffic.runner import Intersection
from control.traffic.schedule import active_entry
from drivers.gpio.factory import PinFactories
from drivers.signals.base import SignalOutput
from kernel.clock import Clock
from kernel.commands import Answer, CommandOutcome, IncomingCommand
from kernel.detectors import ApproachSignal, DetectorEvent
from kernel.errors import ConfigError
from kernel.metrics import Metrics
from kernel.readings import ClockQuality, Priority, Reading
from kernel.source import RunContext

TICK_S = CONTROL_TICK_S
QUEUE_MAX = 10_000
COMMANDS_MAX = 32
STALL_S = 5.0  # no tick for this long: the thread is hung (a tick's I/O is bounded well below)
SIGNAL_REFRESH_S = 1.0  # the cameras hear the approach signals at least this often
CORRUPT_METRIC = "kbe_traffic_state_corrupt_total"

log = logging.getLogger("kbe.traffic")


def _modbus_output(ix: IntersectionConfig, pins: PinFactories) -> SignalOutput:
    from drivers.signals.modbus import ModbusSignalController, ThreadLink

    out = ix.output
    assert isinstance(out, ModbusOutputConfig)
    link = ThreadLink.tcp(out.host, out.port, out.unit, out.timeout_s)
    return ModbusSignalController(tuple(g.name for g in ix.groups), link, buttons=out.buttons)


def _gpio_output(ix: IntersectionConfig, pins: PinFactories) -> SignalOutput:
    from drivers.signals.gpio import GpioSignalHeads

    out = ix.output
    assert isinstance(out, GpioOutputConfig)
    return GpioSignalHeads(out.heads, pin_factory=pins.get("auto"))


FIELD_OUTPUTS: Mapping[str, Callable[[IntersectionConfig, PinFactories], SignalOutput]] = {
    "modbus": _modbus_output,
    "gpio": _gpio_output,
}
"""Signal outputs a field intersection may use, by ``output.driver`` (SUMO is only for the rig)."""


def build_output(ix: IntersectionConfig, pins: PinFactories | None = None) -> SignalOutput:
    """The configured signal output of one intersection, chosen once from :data:`FIELD_OUTPUTS`.

    GPIO heads take their pin factory from ``pins`` (the run's pin factories), never gpiozero's global.
    """
    driver = ix.output.driver if ix.output is not None else None
    make = FIELD_OUTPUTS.get(driver) if driver is not None else None
    if make is None:
        raise ConfigError(
            "traffic",
            [f"intersections.{ix.name}.output: a field intersection needs one of {', '.join(FIELD_OUTPUTS)}"],
        )
    return make(ix, pins or PinFactories())


class TickClock:
    """The monotonic clock as the intersection's thread sees it: read once per step.

    The controller times an interval from its own reading and the envelope checks it from another;
    on a loaded board a thread may be preempted between the two, and the envelope would see a
    clearance a few milliseconds short of the one the controller timed, and flash the junction.
    With one reading per step both judge the same instant.
    """

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self) -> float:
        """Read the monotonic clock for the next step."""
        self.now = time.monotonic()
        return self.now


class TrafficSource:
    """Runs one intersection: ticks it, applies the schedule, forwards its reports."""

    def __init__(
        self,
        ix: IntersectionConfig,
        tz: str,
        output: SignalOutput | None = None,
        pins: PinFactories | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.name = f"traffic:{ix.name}"
        self.ix = ix
        self._tz = zoneinfo.ZoneInfo(tz)
        self._reports: queue.Queue[Reading] = queue.Queue(QUEUE_MAX)
        self.clock = TickClock()
        self.wall: Clock | None = None  # the run's clock (set by run): the time base of coordination
        self.intersection = Intersection(
            ix,
            output or build_output(ix, pins),
            self.clock,
            self._report,
            defer_flash=True,
            time_base=self.shared_time,
        )
        # The step's clock stands still during a Modbus exchange: read-backs are stamped in real time.
        self.intersection.envelope.confirm_clock = time.monotonic
        # The centre's coordination plan, kept on disk; written off the ticking thread (an fsync on
        # an SD card can take longer than the link watchdog allows a tick).
        self.keeper = PlanKeeper(state_dir, ix.name) if state_dir is not None else None
        self._to_keep: queue.SimpleQueue[KeptPlan | None] = queue.SimpleQueue()
        self.intersection.on_kept = self._to_keep.put
        self.inbox = DetectorInbox(ix.detectors)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._running = threading.Event()
        self._entry: ScheduleEntry | None = None
        self._apply = TrafficCommands({ix.name: self.intersection})
        self._commands: queue.Queue[
            tuple[Mapping[str, Any], IncomingCommand | None, concurrent.futures.Future[CommandOutcome]]
        ]
        self._commands = queue.Queue(COMMANDS_MAX)
        self.desk: TrafficDesk | None = None
        self.last_tick_mono: float | None = None
        self.stall_s = STALL_S
        self.publish: Callable[[DetectorEvent], None] | None = None
        self._watched = [(d.source, d.input or d.name, d.group) for d in ix.detectors if d.kind == "zone" and d.source]

    def shared_time(self) -> float | None:
        """Wall time when the run's clock is synchronised (NTP, GPS, the centre), else None: a
        junction coordinates with its neighbours only on a time base they share."""
        wall = self.wall
        if wall is None or wall.quality() != ClockQuality.SYNCED:
            return None
        return wall.now()

    def submit(
        self, body: Mapping[str, Any], cmd: IncomingCommand | None = None
    ) -> concurrent.futures.Future[CommandOutcome]:
        """Hand a command body (and the command it came in) to this intersection's thread; the
        future holds its answer."""
        fut: concurrent.futures.Future[CommandOutcome] = concurrent.futures.Future()
        if not self._running.is_set():
            fut.set_result(CommandOutcome.refused(f"intersection {self.ix.name} is not running"))
            return fut
        try:
            self._commands.put_nowait((body, cmd, fut))
        except queue.Full:
            fut.set_result(CommandOutcome.refused(f"intersection {self.ix.name}: too many commands waiting"))
        self._wake.set()
        return fut

    def apply_command(self, body: dict[str, Any]) -> Answer:
        """A centre command of kind ``traffic``, routed by intersection name to its owner thread."""
        desk = self.desk or TrafficDesk({self.ix.name: self})
        return desk.apply_command(body)

    def apply_incoming(self, cmd: IncomingCommand) -> Answer:
        """The same, with the whole command: its id and times are kept with a ``coordinate``."""
        desk = self.desk or TrafficDesk({self.ix.name: self})
        return desk.apply_incoming(cmd)

    def restore(self, metrics: Metrics | None = None) -> KeptPlan | None:
        """Take up the kept coordination plan again (before the thread starts), when it is still
        valid for this config; say why one was dropped. A corrupt file is counted and set aside."""
        if self.keeper is None:
            return None
        inter = self.intersection
        try:
            loaded = self.keeper.load(self.ix, self.shared_time())
        except OSError as exc:  # the folder itself: run on the configured plan
            inter.report_dropped("unreadable", f"{self.keeper.path}: {exc}")
            return None
        if loaded.dropped == "corrupt" and metrics is not None:
            metrics.inc(CORRUPT_METRIC, labels={"intersection": self.ix.name})
        if loaded.dropped is not None:
            inter.report_dropped(loaded.dropped, loaded.detail)
        plan = loaded.plan
        if plan is None:
            return None
        checked = check_coordinate(self.ix, plan.body())  # the same checks as the centre's command
        if isinstance(checked, CommandOutcome):
            self._to_keep.put(None)
            inter.report_dropped("invalid", checked.reason, plan.command_id)
            return None
        inter.coordinate(plan, restored=True)
        log.info(
            "%s: centre coordination plan %s kept (cycle %g s, start %g s): taken up again",
            self.ix.name, plan.command_id, plan.cycle_s, plan.start_s,
        )  # fmt: skip
        return plan

    def flush_kept(self) -> None:
        """Write (or delete) the kept plan: the last one handed over wins. Never raises."""
        last: KeptPlan | bool | None = False
        while True:
            try:
                last = self._to_keep.get_nowait()
            except queue.Empty:
                break
        if last is False or self.keeper is None:
            return
        try:
            if isinstance(last, KeptPlan):
                self.keeper.save(last)
            else:
                self.keeper.drop()
        except OSError as exc:
            log.error("%s: could not keep the coordination plan in %s: %s", self.ix.name, self.keeper.path, exc)

    def _take_commands(
        self, answer: Callable[[Mapping[str, Any], IncomingCommand | None], CommandOutcome] | None = None
    ) -> None:
        """Apply (on this thread) and answer every command handed over so far."""
        apply = answer or self._apply.apply_command
        while True:
            try:
                body, cmd, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                self.clock.advance()
                try:
                    fut.set_result(apply(body, cmd))
                except Exception as exc:  # the router turns it into a 'failed' answer
                    fut.set_exception(exc)

    def stalled(self, now_mono: float) -> str | None:
        """Why this intersection's thread looks hung (no tick for ``stall_s`` while running), else None."""
        last = self.last_tick_mono
        if self._running.is_set() and last is not None and now_mono - last > self.stall_s:
            return f"{self.name}: no tick for {now_mono - last:.1f} s"
        return None

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
        try:
            self._ticks()
        finally:
            self._running.clear()
            stopping = CommandOutcome.refused(f"intersection {self.ix.name} is stopping")
            self._take_commands(lambda body, cmd: stopping)

    def _ticks(self) -> None:
        inter = self.intersection
        self.clock.advance()
        with inter.lock:  # the output belongs to this thread: its first command is the start-up flash
            inter.envelope.latch("startup", "the junction flashes until it starts")
        inter.start()
        shown_before: dict[str, Any] = {}
        told = -math.inf
        counts = CountReporter(self.ix.name, self.ix.counts_s, self.clock.now)
        deadline = time.monotonic()
        while not self._stop.is_set():
            self.last_tick_mono = self.clock.advance()
            self.inbox.apply(inter.board)
            self._take_commands()
            self._apply_schedule()
            inter.tick()
            shown = {n: i.value for n, i in inter.envelope.shown().items()}
            if shown != shown_before:
                text = " ".join(f"{n}={v}" for n, v in sorted(shown.items()))
                self._report(
                    Reading(self.ix.name, "signal.state", text, time.time(), priority=Priority.EVENT)
                )
                shown_before = shown
                told = -math.inf
            for reading in counts.poll(self.clock.now, inter.board.actuations()):
                self._report(reading)
            if self.clock.now - told >= SIGNAL_REFRESH_S:
                told = self.clock.now
                self._tell_cameras(inter.envelope.shown())
            deadline += TICK_S
            while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                if self._wake.wait(left):  # a command: apply it now, then keep the tick's rhythm
                    self._wake.clear()
                    self._take_commands()
            with inter.lock:
                self.clock.advance()
                inter.envelope.watchdog()
        self.clock.advance()
        with inter.lock:  # the output's link belongs to this thread
            inter.envelope.latch("agent_stopped", "the agent is stopping")

    def _tell_cameras(self, shown: Mapping[str, Any]) -> None:
        """Each camera zone detector's group: stopped (not green) or moving, on the detector bus."""
        if self.publish is None:
            return
        for camera, zone, group in self._watched:
            indication = shown.get(group)
            stop = indication is None or not indication.is_green
            self.publish(ApproachSignal(camera, zone, stop))

    def start(self) -> threading.Thread:
        """Start ticking in a thread of its own."""
        self._stop.clear()
        self._running.set()
        thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        """Stop ticking and wait for the thread."""
        self._stop.set()
        self._wake.set()
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
        """Tick in a thread until cancelled; detectors from the bus go to it, reports to the sink."""
        if self.inbox.wanted:
            ctx.detectors.subscribe(self.inbox.on_event)
        self.wall = ctx.clock
        self.publish = ctx.detectors.publish
        await asyncio.to_thread(self.restore, ctx.metrics)
        thread = self.start()
        try:
            while thread.is_alive():
                batch = self.drain()
                if batch:
                    await ctx.sink.put(batch)
                if not self._to_keep.empty():
                    await asyncio.to_thread(self.flush_kept)
                await asyncio.sleep(0.2)
        finally:
            ctx.detectors.unsubscribe(self.inbox.on_event)
            await asyncio.to_thread(self.stop, thread)
            self.flush_kept()


class TrafficDesk:
    """The kind's command handler: routes a body by intersection name to the thread that owns it."""

    def __init__(self, owners: Mapping[str, TrafficSource]) -> None:
        self._owners = dict(owners)

    def apply_command(self, body: Mapping[str, Any]) -> Answer:
        """The owner's answer, awaited on the caller's event loop (or at once if refused here)."""
        return self._hand_over(body, None)

    def apply_incoming(self, cmd: IncomingCommand) -> Answer:
        """The same for the whole command (the router calls this one: the id is kept with a plan)."""
        return self._hand_over(cmd.body, cmd)

    def _hand_over(self, body: Mapping[str, Any], cmd: IncomingCommand | None) -> Answer:
        name = body.get("intersection")
        owner = self._owners.get(name) if isinstance(name, str) else None
        if owner is None:
            return CommandOutcome.refused(f"intersection: {name!r} is not configured here")
        fut = owner.submit(body, cmd)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop to await on (a plain thread): wait for the owner here
            return fut.result(10.0)
        return asyncio.wrap_future(fut)


def traffic_sources(site: Any, pins: PinFactories | None = None) -> tuple[list[TrafficSource], TrafficDesk]:
    """Sources for every configured intersection, and the command handler the sync layer calls.

    ``pins``: the run's pin factories, for intersections with GPIO signal heads.
    """
    traffic = getattr(site, "traffic", None)
    if traffic is None:
        return [], TrafficDesk({})
    state_dir = traffic.state_dir
    store = getattr(site, "store", None)
    if state_dir is None and store is not None:
        state_dir = Path(store.path).parent / "traffic"  # the agent's state directory
    sources = [
        TrafficSource(ix, site.site.timezone, pins=pins, state_dir=state_dir) for ix in traffic.intersections
    ]
    desk = TrafficDesk({s.ix.name: s for s in sources})
    for s in sources:
        s.desk = desk
    return sources, desk
