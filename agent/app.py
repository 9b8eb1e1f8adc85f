"""The agent runtime: store, writer, supervised sources, uplink, health endpoint, systemd integration."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.fleet_report import BalenaHealthReporter
from agent.health import HealthServer
from agent.supervisor import Supervisor
from agent.writer import StoreWriter
from kernel import collector
from kernel.clock import Clock
from kernel.commands import CommandHandler, CommandOutcome, CommandRouter, IncomingCommand
from kernel.cpuwait import RunQueueWait
from kernel.errors import AgentError
from kernel.kinds import KindRegistry
from kernel.metrics import Metrics
from kernel.readings import Priority, Reading
from kernel.services import Services
from kernel.sink import ReadingSink
from kernel.source import Liveness, RunContext, Source
from kernel.version import agent_version
from sync.store import Store

if TYPE_CHECKING:
    from agent.commissioning.live import LiveTap
    from agent.config import SiteConfig
    from agent.localpage.server import LocalPage
    from agent.update.manager import UpdateManager
    from sync.enrol import Enroller
    from sync.uploader import Uploader

log = logging.getLogger("kbe.agent")

AGENT_DEVICE = "agent"  # device name of the agent's own events and alarms
COMMANDS_IN_FLIGHT = 16  # commands handed to control loops and not yet answered


PACE_EVERY_S, PACE_TICK_S = 2.0, 0.25  # the pace's control step; the timer whose lateness is measured


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (for journald or a log shipper)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(cfg: SiteConfig) -> None:
    """Configure the root logger from the site config (``DEBUG=1`` forces DEBUG)."""
    handler = logging.StreamHandler(sys.stderr)
    if cfg.logging.json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("DEBUG" if os.environ.get("DEBUG") == "1" else cfg.logging.level)


class _SystemdNotifier:
    """sd_notify READY/STOPPING/WATCHDOG when run under systemd (``NOTIFY_SOCKET`` set); else nothing."""

    def __init__(self) -> None:
        self._notifier: Any = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            self._notifier = sdnotify.SystemdNotifier()
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval_s = int(usec) / 2e6 if usec and usec.isdigit() else None

    def notify(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)


class Agent:
    """One site's agent. ``await Agent(cfg).run(stop)`` runs until ``stop`` is set, then shuts down cleanly."""

    def __init__(
        self,
        cfg: SiteConfig,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        kinds: KindRegistry | None = None,
        services: Services | None = None,
        updates: UpdateManager | None = None,
    ) -> None:
        self.cfg = cfg
        # Under balena (balena-api feature label) the agent's own health also goes to a device tag;
        # read first, so a bad KBE_HEALTH_TAG_INTERVAL_S stops the start before anything opens.
        self.fleet_reporter = BalenaHealthReporter.from_env(os.environ, self.health)
        self.kinds = kinds if kinds is not None else KindRegistry()
        self.updates = updates
        self._restart = asyncio.Event()
        self._update_task: asyncio.Task[None] | None = None
        self.clock = clock or Clock()
        self.metrics = metrics or Metrics(process=True, version=agent_version())
        self.store = Store(cfg.store.path, cfg.site.id, cfg.store.max_bytes, self.metrics)
        self.writer = StoreWriter(self.store, self.metrics, cfg.store.queue_size, cfg.store.commit_interval_s)
        self.supervisor = Supervisor(
            self.metrics, cfg.supervisor.max_restarts, cfg.supervisor.window_s, cfg.supervisor.backoff_s
        )
        # With the local page on, readings pass a tap that keeps the last values for it on their way.
        self.tap: LiveTap | None = None
        sink: ReadingSink = self.writer
        if cfg.local_page is not None:
            from agent.commissioning.live import LiveTap

            self.tap = LiveTap(self.writer)
            sink = self.tap
        self.local_page: LocalPage | None = None
        self.ctx = RunContext(
            cfg,
            sink,
            self.clock,
            self.metrics,
            logging.getLogger("kbe.source"),
            services if services is not None else Services(),
        )
        self.sources: list[Source] = []
        self.commands = CommandRouter(
            cfg.site.id, self.clock, cfg.store.path.with_name(cfg.store.path.name + ".commands")
        )
        self.uploader: Uploader | None = None
        self.enroller: Enroller | None = None
        self._command_keys: list[Any] = []
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._withheld: list[str] = []
        self.health_server: HealthServer | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._started_mono = time.monotonic()
        self._register_gauges()

    def _register_gauges(self) -> None:
        m = self.metrics
        m.describe("kbe_buffer_depth", "Readings in the store not yet acknowledged by the centre.")
        m.gauge_callback("kbe_buffer_depth", lambda: float(self.store.stats().depth))
        m.describe("kbe_buffer_oldest_age_seconds", "Age of the oldest unacknowledged reading.")
        m.gauge_callback("kbe_buffer_oldest_age_seconds", self._oldest_age)
        m.describe("kbe_buffer_fill_ratio", "Store bytes used over its cap.")
        m.gauge_callback("kbe_buffer_fill_ratio", lambda: self.store.stats().fill)
        m.describe("kbe_buffer_dropped", "Readings dropped by the byte cap since the store was created.")
        m.gauge_callback("kbe_buffer_dropped", lambda: float(sum(self.store.stats().dropped.values())))
        m.describe("kbe_readings_per_second", "Readings accepted per second over the last 5 s.")
        m.describe("kbe_gc_frozen_objects", "Objects kept out of the garbage collector's walks since start-up.")
        m.gauge_callback("kbe_gc_frozen_objects", lambda: float(gc.get_freeze_count()))
        m.describe("kbe_gc_full_collections", "Full garbage collections since the process started.")
        m.gauge_callback("kbe_gc_full_collections", lambda: float(gc.get_stats()[2]["collections"]))

    def request_restart(self) -> None:
        """Stop this agent core; :meth:`run` returns True so the runtime starts it again (updates)."""
        self._restart.set()

    def _status_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "healthy": bool(self.supervisor.healthy()),
            "readings_per_s": round(self.metrics.get("kbe_readings_per_second"), 2),
        }
        if self.updates is not None:
            info.update(self.updates.status())
        return info

    def _oldest_age(self) -> float:
        oldest = self.store.stats().oldest_ts
        return max(0.0, self.clock.now() - oldest) if oldest is not None else 0.0

    def health(self) -> dict[str, Any]:
        """The /health report."""
        stats = self.store.stats()
        writer_stalled = len(self.writer) > 0 and time.monotonic() - self.writer.last_commit_mono > 30
        tasks = {
            name: {"state": s.state, "restarts": s.restarts, "last_error": s.last_error}
            for name, s in self.supervisor.states.items()
        }
        sync_state = (
            self.uploader.health() if self.uploader is not None else None
        )
        stalled = self.supervisor.stalled()
        return {
            "ok": self.supervisor.healthy() and not writer_stalled and not stalled,
            "stalled": stalled,
            "site": self.cfg.site.id,
            "uptime_s": round(time.monotonic() - self._started_mono, 1),
            "clock": self.clock.quality().name.lower(),
            "buffer": {
                "depth": stats.depth,
                "bytes": stats.bytes_used,
                "fill": round(stats.fill, 4),
                "oldest_ts": stats.oldest_ts,
                "dropped": {p.name.lower(): n for p, n in stats.dropped.items()},
                "rejected": stats.rejected,
                "quarantined": stats.quarantined,
            },
            "writer": {"queued": len(self.writer), "stalled": writer_stalled},
            "tasks": tasks,
            "sync": sync_state,
            "enrolment": self.enroller.health() if self.enroller is not None else None,
        }

    async def _report_start(self) -> None:
        now = self.clock.now()
        clock = self.clock.quality()
        events = [Reading(AGENT_DEVICE, "started", 1, now, priority=Priority.EVENT, clock=clock)]
        for path in self.store.quarantined:
            events.append(
                Reading(
                    AGENT_DEVICE,
                    "store_quarantined",
                    str(path),
                    now,
                    priority=Priority.ALARM,
                    clock=clock,
                    meta={"reason": "integrity check failed; file moved aside"},
                )
            )
        await self.writer.put(events)

    def build_sources(self) -> list[Source]:
        """Instantiate every enabled device's sources, grouped by kind."""
        by_kind: dict[str, list[Any]] = defaultdict(list)
        for dev in self.cfg.devices:
            if dev.enabled:
                by_kind[dev.driver].append(dev)
        sources: list[Source] = []
        for kind, configs in by_kind.items():
            device_kind = self.kinds.get(kind)
            built = device_kind.build_sources(configs, self.ctx)
            # A control loop (lighting, traffic) takes the centre's commands of its kind and hands
            # them to the thread or task that owns its outputs (answered from there).
            handler = next((s for s in built if isinstance(s, CommandHandler)), None)
            if handler is not None:
                for command_kind in device_kind.command_kinds or (kind,):
                    self.commands.register(command_kind, handler)
            sources.extend(built)
        return sources

    def _on_command(self, kind: str, payload: bytes) -> None:
        """A frame from ``down/cmd/<kind>`` (on the event loop): verify it, then hand it over.

        The signature, target and topic are checked here; time, replay and the command itself are
        the router's and the control loop's, in a task of its own, so a loop that answers from its
        own thread never holds the event loop. At most ``COMMANDS_IN_FLIGHT`` wait at once.
        """
        from sync.signing import CommandRefused, open_command
        from sync.wire_base import WireError, unpack_frame

        try:
            if not self._command_keys:
                raise CommandRefused("this site has no command_public_keys configured; commands are refused")
            if len(self._command_tasks) >= COMMANDS_IN_FLIGHT:
                raise CommandRefused(f"{COMMANDS_IN_FLIGHT} commands are still being applied; try again")
            cmd = open_command(payload, self._command_keys, self.cfg.site.id, kind)
        except (AgentError, WireError) as exc:
            try:
                command_id = unpack_frame(payload).msg_id or "unknown"
            except (AgentError, WireError):
                command_id = "unknown"
            log.warning("command on %s refused: %s", kind, exc)
            self._answer(kind, command_id, CommandOutcome.refused(str(exc)))
            return
        incoming = IncomingCommand(
            cmd.command_id, cmd.target, cmd.kind, cmd.issued_at, cmd.expires_at, dict(cmd.body)
        )
        task = asyncio.create_task(self._dispatch(kind, incoming), name=f"kbe:command:{cmd.command_id}")
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)

    async def _dispatch(self, kind: str, cmd: IncomingCommand) -> None:
        outcome = await self.commands.dispatch_async(cmd)
        version = cmd.body.get("version") if kind == "update" else None
        self._answer(kind, cmd.command_id, outcome, version if isinstance(version, int) else None)

    def _answer(self, kind: str, command_id: str, outcome: CommandOutcome, version: int | None = None) -> None:
        from sync.wire_msgs import CommandReply, build

        self.metrics.inc("kbe_commands_total", labels={"kind": kind, "outcome": outcome.outcome})
        if self.uploader is not None:
            self.uploader.reply(
                build(
                    CommandReply,
                    site_id=self.cfg.site.id,
                    command_id=command_id,
                    outcome=outcome.outcome,
                    reason=outcome.reason,
                    ts=self.clock.now(),
                    phase="staged" if version is not None and outcome.outcome == "accepted" else "",
                    version=version,
                )
            )

    async def _pace_loop(self) -> None:
        """Every few seconds: stretch or relax the sources' poll periods (kernel/pace.py)."""
        pace, loop = self.ctx.pace, asyncio.get_running_loop()
        cpu_wait = self.ctx.services.get(RunQueueWait)
        self.metrics.describe("kbe_acquisition_stretch", "How many times slower than configured sources poll (1: as configured).")
        self.metrics.describe("kbe_cpu_wait_ratio", "Seconds per second the agent's threads waited for a core (schedstat).")
        last_n, last_depth, last_t = self.writer.committed, self.store.depth(), time.monotonic()
        cpu_wait.share()  # the first look only sets the mark
        ticks = round(PACE_EVERY_S / PACE_TICK_S)
        while True:
            lag = 0.0
            for _ in range(ticks):
                t = loop.time()
                await asyncio.sleep(PACE_TICK_S)
                lag += loop.time() - t - PACE_TICK_S
            n, depth, now = self.writer.committed, self.store.depth(), time.monotonic()
            dt = now - last_t
            accepted = (n - last_n) / dt
            delivered = accepted - (depth - last_depth) / dt
            connected = self.uploader is not None and self.uploader.connected
            waited = cpu_wait.share()
            before = pace.stretch
            stretch = pace.update(depth, accepted, delivered, connected, lag / ticks, waited)
            self.metrics.set("kbe_acquisition_stretch", stretch)
            if waited is not None:
                self.metrics.set("kbe_cpu_wait_ratio", waited)
            if before == 1.0 < stretch:
                log.warning(
                    "the uplink cannot keep up (%d readings waiting, %.0f/s acknowledged): polling more slowly",
                    depth,
                    delivered,
                )
            elif before > 1.0 == stretch:
                log.info("the uplink keeps up again: polling as configured")
            last_n, last_depth, last_t = n, depth, now

    async def _rate_loop(self) -> None:
        last_n, last_t = self.writer.committed, time.monotonic()
        while True:
            await asyncio.sleep(5.0)
            n, t = self.writer.committed, time.monotonic()
            self.metrics.set("kbe_readings_per_second", (n - last_n) / (t - last_t))
            last_n, last_t = n, t

    async def start(self) -> None:
        """Start the health endpoint (first: a taken port stops everything before it starts), the
        writer, the sources and the uplink."""
        if self.cfg.health.listen:
            self.health_server = HealthServer(self.cfg.health.listen, self.metrics, self.health)
            await self.health_server.start()
        self._writer_task = asyncio.create_task(self.writer.run(), name="kbe:writer")
        await self._report_start()
        self.sources = self.build_sources()
        for source in self.sources:
            probe = source.stalled if isinstance(source, Liveness) else None
            self.supervisor.start(f"source:{source.name}", lambda s=source: s.run(self.ctx), probe)  # type: ignore[misc]
        self.supervisor.start("rate", self._rate_loop)
        if self.cfg.sync is not None:
            self.supervisor.start("pace", self._pace_loop)
        if self.cfg.sync is not None:
            from sync.signing import load_public_key
            from sync.uploader import Uploader

            self._command_keys = [load_public_key(p) for p in self.cfg.sync.command_public_keys]
            self.uploader = Uploader(self.cfg.sync, self.cfg.site.id, self.store, self.metrics, self.clock)
            self.uploader.on_commands(self._on_command)
            if self.cfg.sync.enrol is not None:
                from sync.enrol import Enroller

                self.enroller = Enroller(self.cfg.sync, self.cfg.site.id, self.uploader.signer)
            self.uploader.status_info = self._status_info
            self.supervisor.start("sync", self._sync_task)
        if self.updates is not None:
            from agent.update.body import UPDATE_KIND
            from agent.update.host import AgentUpdateHost

            host = AgentUpdateHost(self)
            self.updates.host = host
            self.commands.register_incoming(UPDATE_KIND, self.updates.handle)
            self._update_task = asyncio.create_task(self._run_updates(host), name="kbe:update")
        if self.cfg.local_page is not None:
            await self._start_local_page()
        if self.fleet_reporter is not None:
            self.supervisor.start("fleet-report", self.fleet_reporter.run)
        log.info(
            "agent for site %s running: %d sources, sync %s",
            self.cfg.site.id,
            len(self.sources),
            "on" if self.uploader else "off",
        )

    async def _sync_task(self) -> None:
        """Enrol first when the site has no certificate yet (acquisition buffers meanwhile), then upload."""
        assert self.uploader is not None
        if self.enroller is not None:
            await self.enroller.run()
        await self.uploader.run()

    def _sync_health(self) -> dict[str, Any] | None:
        """The uplink's state with the enrolment's (for the local page)."""
        if self.uploader is None:
            return None
        report = dict(self.uploader.health())
        if self.enroller is not None:
            report["enrolment"] = self.enroller.health()
        return report

    async def _run_updates(self, host: Any) -> None:
        assert self.updates is not None
        try:
            await self.updates.run(host)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the update watch failed")

    async def _start_local_page(self) -> None:
        """Serve the technician's page (imported only when configured: aiohttp stays out otherwise)."""
        from agent.commissioning.checks import SiteState
        from agent.localpage.server import LocalPage

        assert self.cfg.local_page is not None
        assert self.tap is not None
        state = SiteState(
            self.cfg,
            self.tap,
            self.metrics,
            self.clock,
            store_stats=self.store.stats,
            sync_health=self._sync_health,
            task_states=lambda: self.health()["tasks"],
        )
        self.local_page = LocalPage(self.cfg.local_page, state)
        await self.local_page.start()

    async def shutdown(self, flush_timeout_s: float = 5.0) -> None:
        """Stop acquisition, commit what is queued, give the uplink a moment to flush, close the store."""
        log.info("shutting down")
        if self._update_task is not None:
            self._update_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._update_task
        uploader = self.uploader
        # Sources first, so nothing new arrives; the uplink keeps running while the writer flushes.
        await self.supervisor.cancel_matching("source:")
        await self.writer.flush()
        enrolled = self.enroller is None or self.enroller.state == "enrolled"
        if uploader is not None and enrolled:  # not enrolled: nothing can be sent, keep all for the next start
            with contextlib.suppress(Exception):
                await asyncio.wait_for(uploader.flush(flush_timeout_s), timeout=flush_timeout_s + 1)
        await self.supervisor.stop()
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
        await self.writer.flush()
        if self.health_server is not None:
            await self.health_server.stop()
        if self.local_page is not None:
            await self.local_page.stop()
        await asyncio.to_thread(self.store.close)
        self.commands.close()

    def _pet(self, notifier: _SystemdNotifier) -> None:
        """Pet the watchdog only while the loop runs, the store keeps committing and every supervised
        task is alive; otherwise say why (once per change) and let systemd restart the agent."""
        why = self.supervisor.stalled()
        if len(self.writer) > 0 and time.monotonic() - self.writer.last_commit_mono > 30:
            why.append("writer: no commit for 30 s")
        if not why:
            notifier.notify("WATCHDOG=1")
        elif why != self._withheld:
            log.error("watchdog not fed: %s", "; ".join(why))
        self._withheld = why

    async def run(self, stop: asyncio.Event, started: Callable[[], object] | None = None) -> bool:
        """Start, run until ``stop`` is set (False) or a restart is requested (True), shut down.

        ``started`` is called once everything has started (the process entry freezes the start-up
        objects out of the garbage collector's walks there: :mod:`kernel.collector`)."""
        notifier = _SystemdNotifier()
        await self.start()
        if started is not None:
            started()
        notifier.notify("READY=1")
        restart = False
        try:
            while not stop.is_set():
                interval = notifier.watchdog_interval_s or 5.0
                stopped = asyncio.ensure_future(stop.wait())
                restarted = asyncio.ensure_future(self._restart.wait())
                await asyncio.wait({stopped, restarted}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
                for fut in (stopped, restarted):
                    fut.cancel()
                if self._restart.is_set() and not stop.is_set():
                    restart = True
                    break
                if notifier.watchdog_interval_s:
                    self._pet(notifier)
        finally:
            if not restart:
                notifier.notify("STOPPING=1")
            await self.shutdown(1.0 if restart else 5.0)
        return restart


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``): with a thread pool for SQLite commits, the default
    of 8 per core lets a small board's RSS creep up through fragmentation. False where not glibc."""
    from kernel.libc import load_libc

    libc = load_libc()
    if libc is None:
        return False
    try:
        return bool(libc.mallopt(-8, arenas))  # -8 is M_ARENA_MAX in <malloc.h>
    except AttributeError:
        return False


async def run_site(
    cfg: SiteConfig,
    updates: UpdateManager | None,
    reload: Any,
    stop: asyncio.Event,
    kinds: KindRegistry | None = None,
    started: Callable[[], object] | None = None,
) -> None:
    """Run one site until ``stop``; after an update's restart, rebuild it from ``reload()`` -> (cfg, updates).

    ``started`` is called each time an agent core has started; before a restart in this process the
    objects it froze are given back to the garbage collector (:func:`kernel.collector.thaw`)."""
    while True:
        try:
            restart = await Agent(cfg, kinds=kinds, updates=updates).run(stop, started)
        finally:
            if started is not None:
                collector.thaw()
        if not restart or stop.is_set():
            return
        log.info("restarting the agent core for the selected version")
        cfg, updates = await asyncio.to_thread(reload)


def run_agent(
    cfg: SiteConfig, kinds: KindRegistry | None = None, updates: UpdateManager | None = None, reload: Any = None
) -> None:
    """Run the agent in the foreground until SIGTERM or SIGINT (``kinds``: the registry ``cfg`` was read with;
    ``updates`` and ``reload``: the update manager and how to rebuild the site after an update)."""
    setup_logging(cfg)
    limit_malloc_arenas()
    collector.tune()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sweeping = asyncio.create_task(collector.sweep(stop), name="gc-sweep")
        try:
            await run_site(cfg, updates, reload or (lambda: (cfg, updates)), stop, kinds, collector.freeze_started)
        finally:
            sweeping.cancel()

    asyncio.run(main())
