"""One rig run, start to finish.

1. Work dir: Ed25519 keys, the receiver's site registry, the broker's config, the site config.
2. Start the emulators (this process's event loop), a private Mosquitto, the reference receiver and
   the agent (``edge-agent run``), and wait for the agent's health endpoint.
3. Run the fault timeline for the rig's duration while sampling the agent's CPU and RSS.
4. Drain: stop the agent, start it again with no devices so it only uploads what its store still
   holds, until the store is empty and the receiver holds every seq the store ever handed out.
5. Stop everything, read the receiver's table and the store's last seq, check the expectations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drivers.gpio.rigpins import SOCKET_ENV
from hil.devices import EmulatorBank
from hil.expect import Row, RunRecord, Verdict, evaluate, failing_so_far
from hil.pins import PinServer
from hil.procs import Broker, ManagedProcess, ProcessSet, agent_argv, agent_env, free_port
from hil.report import render
from hil.rig import (
    AgentKill,
    BrokerDown,
    GpioDevice,
    GpioInputSet,
    ModbusDevice,
    ReceiverRestart,
    Rig,
    SerialDevice,
    SystemDevice,
)
from hil.schedule import FaultScheduler, FaultWindow
from hil.sources import (
    proc_cpu_seconds,
    proc_rss_kib,
    receiver_count,
    receiver_last_good,
    receiver_rows,
    store_state,
)
from kernel.errors import HilFailure
from kernel.kinds import KindRegistry
from kernel.progress import Snapshot

log = logging.getLogger("kbe.hil")

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class RunOptions:
    """How to run a rig: ``speed`` divides its timeline; ``work_dir`` keeps the files."""

    speed: float = 1.0
    work_dir: Path | None = None
    keep: bool = False
    seed: int = 1
    receiver_db: str | None = None  # "sqlite" or "postgres"; None: what the rig says
    on_progress: Callable[[Snapshot], None] | None = None  # called about once a second while it runs
    live_checks_every_s: float = 5.0  # how often the progress asks the receiver what is failing


@dataclass(frozen=True)
class Sample:
    """The agent's store seen once a second: readings waiting for the centre and the last seq."""

    wall: float
    depth: int
    last_seq: int


@dataclass
class RunResult:
    """A finished run: the verdict, the faults as they happened, and the figures a bench wants."""

    rig: Rig
    verdict: Verdict
    windows: list[FaultWindow]
    elapsed_s: float
    report: str
    stored_per_s: float
    offered_per_s: float
    agent_cpu_pct: float | None
    agent_rss_max_kib: int | None
    agent_starts: int
    work_dir: Path
    lost: int
    duplicates: int
    extra: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    start_wall: float = 0.0
    end_wall: float = 0.0


def offered_rate(rig: Rig, kinds: KindRegistry | None = None) -> float:
    """Readings per second the rig's devices offer with no fault (the baseline of a bench)."""
    from drivers.modbus.kind import cached_profile

    kinds = kinds if kinds is not None else KindRegistry()
    total = 0.0
    for d in rig.devices:
        if isinstance(d, ModbusDevice):
            points = cached_profile(d.profile).points
            slow = sum(1 for p in points if getattr(p, "poll", "fast") == "slow")
            total += (len(points) - slow) / d.poll_s + slow / max(d.poll_s, 10.0)
        elif isinstance(d, SerialDevice):
            rig_support = kinds.rig_kind(d.sensor, "stream").rig
            assert rig_support is not None
            per_period = rig_support.readings_per_period or len(rig_support.ranges)
            total += per_period / d.period_s
        elif isinstance(d, GpioDevice):
            total += (len(d.outputs) + 2 * len(d.inputs)) / d.period_s
        elif isinstance(d, SystemDevice):
            total += 3 / d.period_s
    return total


class _CpuSampler:
    """CPU seconds and peak RSS of the agent across its restarts (one entry per PID)."""

    def __init__(self, proc: ManagedProcess) -> None:
        self.proc = proc
        self.cpu: dict[int, float] = {}
        self.rss_max = 0

    def sample(self) -> None:
        pid = self.proc.pid
        if pid is None:
            return
        cpu, rss = proc_cpu_seconds(pid), proc_rss_kib(pid)
        if cpu is not None:
            self.cpu[pid] = cpu
        if rss is not None:
            self.rss_max = max(self.rss_max, rss)

    @property
    def total(self) -> float:
        return sum(self.cpu.values())


class _Injector:
    """Carries out system faults itself and hands device faults to the emulators."""

    def __init__(self, run: RigRun) -> None:
        self.run = run

    async def start(self, fault: Any) -> None:
        r = self.run
        if isinstance(fault, BrokerDown):
            await asyncio.to_thread(r.broker.stop)
        elif isinstance(fault, AgentKill):
            r.sampler.sample()
            await asyncio.to_thread(r.agent.kill)
        elif isinstance(fault, ReceiverRestart):
            if fault.signal == "SIGKILL":
                await asyncio.to_thread(r.receiver.kill)
            else:
                await asyncio.to_thread(r.receiver.stop)
        elif isinstance(fault, GpioInputSet):
            await r.set_input(fault, True)
        else:
            r.bank.inject(fault, True)

    async def end(self, fault: Any) -> None:
        r = self.run
        if isinstance(fault, BrokerDown):
            await asyncio.to_thread(r.broker.start)
        elif isinstance(fault, AgentKill):
            r.agent.start()
        elif isinstance(fault, ReceiverRestart):
            r.receiver.start()
        elif isinstance(fault, GpioInputSet):
            await r.set_input(fault, False)
        else:
            r.bank.inject(fault, False)


def sunset_site(after_s: float, now: float | None = None, lat: float = 21.19) -> tuple[float, float, str]:
    """(lat, lon, timezone) of a place where the sun sets ``after_s`` seconds from now.

    A rig with a lighting controller runs at any hour; putting the site where it is evening makes the
    photocell's window around sunset open during the run. Sunset moves 4 minutes per degree of
    longitude; the zone is the whole-hour ``Etc/GMT`` zone nearest that longitude (local evening).
    """
    import datetime as dt
    from zoneinfo import ZoneInfo

    from astral import Observer
    from astral import sun as astral_sun

    target = dt.datetime.fromtimestamp((now if now is not None else time.time()) + after_s, dt.timezone.utc)
    lon = 106.0
    tzname = "Etc/GMT"
    for _ in range(5):
        off = max(-12, min(14, round(lon / 15)))
        tzname = f"Etc/GMT{-off:+d}" if off else "Etc/GMT"
        tz = ZoneInfo(tzname)
        local = target.astimezone(tz)
        day = local.date() if local.hour >= 12 else local.date() - dt.timedelta(days=1)
        sunset = astral_sun.sunset(Observer(lat, lon), day, tzinfo=tz)
        lon = (lon + (sunset - target).total_seconds() / 240.0 + 180.0) % 360.0 - 180.0
    return lat, round(lon, 5), tzname


def lighting_section(lt: Any, work: Path) -> dict[str, Any]:
    """The site config's ``lighting``: one circuit on the rig's gpio bank, full level all night."""
    output: dict[str, Any] = {"type": "gpio_bank", "device": lt.gpio, "relay": lt.relay}
    if lt.dim is not None:
        output["dim"] = lt.dim
    return {
        "profiles": [{"name": "full", "start_level": 100}],
        "groups": [{"name": "route", "profile": "full"}],
        "circuits": [
            {"name": "c1", "group": "route", "lamps": 10, "lamp_watts": 100, "settle_s": 0, "output": output}
        ],
        "photocell": {
            "type": "gpio_bank",
            "device": lt.gpio,
            "input": lt.photocell,
            "window_min": lt.window_min,
            "debounce_s": 0,
        },
        "default_when_clock_unsynced": False,
        "state_path": str(work / "agent" / "lighting-state.json"),
        "tick_s": 0.5,
        "report_period_s": 60,
    }


class RigRun:
    """Runs one rig (already scaled to the wanted speed)."""

    def __init__(self, rig: Rig, opts: RunOptions, kinds: KindRegistry | None = None) -> None:
        self.rig = rig
        self.opts = opts
        self.kinds = kinds if kinds is not None else KindRegistry()
        self.procs = ProcessSet()
        self._tmp: Path | None = None
        if opts.work_dir is not None:
            self.work = opts.work_dir
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self.work = Path(tempfile.mkdtemp(prefix=f"hil-{rig.rig}-"))
            self._tmp = self.work
        self.bank = EmulatorBank(rig, opts.seed, self.kinds)
        self.broker = Broker(self.work)
        self.procs.add(self.broker)
        self.site_id = rig.site_id
        self.store_path = self.work / "agent" / "store.db"
        self.health_port = free_port()
        self._pg_db: str | None = None
        self.db_url = f"sqlite:///{self.work / 'receiver.db'}"
        self.receiver = self.procs.add(
            ManagedProcess("receiver", [], self.work / "logs" / "receiver.log", agent_env())
        )
        env = agent_env()
        self.pins: PinServer | None = None
        self._pins_dir: Path | None = None
        if any(isinstance(d, GpioDevice) and d.pins == "rig" for d in rig.devices):
            # A short path of its own: Unix socket paths are limited to about 100 bytes.
            self._pins_dir = Path(tempfile.mkdtemp(prefix="kbe-pins-"))
            self.pins = PinServer(self._pins_dir / "pins.sock")
            env[SOCKET_ENV] = str(self.pins.path)
        self.agent = self.procs.add(ManagedProcess("agent", [], self.work / "logs" / "agent.log", env))
        self.sampler = _CpuSampler(self.agent)
        self.samples: list[Sample] = []

    # -- setup ----------------------------------------------------------------------------------

    def _keys(self) -> tuple[Path, Path]:
        from sync.signing import generate_keypair

        key, pub = generate_keypair(self.work / "keys", "site")
        generate_keypair(self.work / "keys", "centre")  # signs the receiver's acks
        sites = {"sites": {self.site_id: {"public_keys": [str(pub)]}}}
        sites_file = self.work / "sites.yaml"
        sites_file.write_text(yaml.safe_dump(sites))
        return key, sites_file

    def _postgres(self) -> None:
        import psycopg

        name = f"hil_{self.rig.rig.replace('-', '_').replace('.', '_')}_{secrets.token_hex(4)}"
        with psycopg.connect(self.rig.receiver.postgres_url, autocommit=True) as pg:
            pg.execute(f'CREATE DATABASE "{name}"')
        self._pg_db = name
        base = self.rig.receiver.postgres_url.rsplit("/", 1)[0]
        self.db_url = f"{base}/{name}"

    def _drop_postgres(self) -> None:
        if self._pg_db is None or self.opts.keep:
            return
        import psycopg

        with psycopg.connect(self.rig.receiver.postgres_url, autocommit=True) as pg:
            pg.execute(f'DROP DATABASE IF EXISTS "{self._pg_db}" WITH (FORCE)')

    async def set_input(self, fault: GpioInputSet, active: bool) -> None:
        """Drive a rig-controlled input: active is the low level (the bank's inputs pull up)."""
        assert self.pins is not None
        dev = self.rig.device(fault.device)
        pin = next(i.pin for i in dev.inputs if i.name == fault.input)
        await self.pins.set(pin, not active)

    def site_config(self, key: Path, devices: list[dict[str, Any]]) -> dict[str, Any]:
        """The site config the agent runs with."""
        a = self.rig.agent
        site: dict[str, Any] = {
            "id": self.site_id,
            "name": f"HIL rig {self.rig.rig}",
            "location": {"lat": 21.1861, "lon": 106.0763},
        }
        extra: dict[str, Any] = {}
        for d in devices:
            if d.get("driver") == "gpio" and self.rig.device(d["name"]).pins == "rig":
                d["pin_factory"] = "rig"
        if self.rig.lighting is not None and devices:
            lat, lon, tz = sunset_site(self.rig.lighting.sunset_after_s)
            site["location"] = {"lat": lat, "lon": lon}
            site["timezone"] = tz
            devices = [*devices, {"driver": "lighting", "name": self.rig.lighting.name}]
            extra["lighting"] = lighting_section(self.rig.lighting, self.work)
        return {
            "version": 1,
            "site": site,
            "devices": devices,
            **extra,
            "sync": {
                "broker": self.broker.url,
                "allow_plaintext": True,  # the rig's own broker on the loopback
                "centre_public_keys": [str(key.parent / "centre.pub")],
                "signing_key_file": str(key),
                "batch": {"max_age_s": a.batch_max_age_s},
                "ack_timeout_s": a.ack_timeout_s,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": a.reconnect_max_s,
                "keepalive_s": 5,
            },
            "store": {"path": str(self.store_path)},
            "health": {"listen": f"127.0.0.1:{self.health_port}"},
            "supervisor": {"max_restarts": 1000, "window_s": 60.0, "backoff_s": 0.5},
        }

    def _write_config(self, name: str, cfg: dict[str, Any]) -> Path:
        from agent.config import parse_config

        path = self.work / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        parse_config(cfg, str(path), self.work, self.kinds)  # an invalid generated config stops here, with its problems
        return path

    async def _wait_health(self, timeout: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.health_port}/health"
        deadline = time.monotonic() + timeout

        def probe() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    json.loads(resp.read())
                    return True
            except urllib.error.HTTPError:
                return True  # it answers: an unhealthy agent is still up
            except (OSError, ValueError):
                return False

        while time.monotonic() < deadline:
            if await asyncio.to_thread(probe):
                return
            if not self.agent.running():
                raise HilFailure(f"the agent exited during start-up:\n{self.agent.tail()}")
            await asyncio.sleep(0.2)
        raise HilFailure(
            f"the agent's health endpoint did not answer within {timeout:.0f} s:\n{self.agent.tail()}"
        )

    # -- watching -------------------------------------------------------------------------------

    def _sample_store(self) -> Sample | None:
        try:
            state = store_state(self.store_path)
        except Exception:  # the store is being created or checkpointed: skip this look
            return None
        return Sample(time.time(), state.depth, state.last_seq)

    async def _watch(
        self, scheduler: FaultScheduler, t0: float, start_wall: float, phase: str = "run"
    ) -> None:
        """Once a second: CPU and RSS, the store's depth; the progress line with what fails so far."""
        failing: list[str] = []
        checked = 0.0
        while True:
            self.sampler.sample()
            sample = await asyncio.to_thread(self._sample_store)
            if sample is not None:
                self.samples.append(sample)
            show = self.opts.on_progress
            if show is not None:
                now = time.monotonic()
                if now - checked >= self.opts.live_checks_every_s:
                    checked = now
                    try:
                        last_good = await asyncio.to_thread(receiver_last_good, self.db_url, self.site_id)
                        failing = failing_so_far(self.rig, scheduler.windows, last_good, start_wall, time.time())
                    except Exception as exc:  # the receiver's table may not exist yet
                        log.debug("live checks: %s", exc)
                active = [
                    w.label.split(" at ")[0]
                    for w in scheduler.windows
                    if w.start_wall is not None and w.end_wall is None
                ]
                show(
                    Snapshot(
                        elapsed_s=now - t0,
                        total_s=self.rig.duration_s,
                        faults=active,
                        stored=sample.last_seq if sample is not None else None,
                        failing=failing,
                        phase=phase,
                    )
                )
            await asyncio.sleep(1.0)

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Run the rig; always stops everything it started."""
        try:
            return await self._run()
        finally:
            await asyncio.to_thread(self.procs.stop_all)
            await self.bank.close()
            if self.pins is not None:
                await self.pins.close()
            if self._pins_dir is not None:
                shutil.rmtree(self._pins_dir, ignore_errors=True)
            with contextlib.suppress(Exception):
                self._drop_postgres()
            if self._tmp is not None and not self.opts.keep:
                shutil.rmtree(self._tmp, ignore_errors=True)

    async def _run(self) -> RunResult:
        rig = self.rig
        key, sites_file = self._keys()
        if (self.opts.receiver_db or rig.receiver.db) == "postgres":
            await asyncio.to_thread(self._postgres)
        await self.bank.start()
        if self.pins is not None:
            await self.pins.start()
        # The broker first: it may move to another port if its own was taken, and the configs name it.
        await asyncio.to_thread(self.broker.start)
        run_cfg = self._write_config("site.yaml", self.site_config(key, self.bank.site_devices(rig.agent)))
        drain_cfg = self._write_config("site-drain.yaml", self.site_config(key, []))
        self.receiver.argv = agent_argv(
            "receiver", "--broker", self.broker.url, "--allow-plaintext", "--db", self.db_url, "--sites",
            str(sites_file), "--signing-key", str(self.work / "keys" / "centre.key"),
        )
        self.receiver.start()
        self.agent.argv = agent_argv("run", "--config", str(run_cfg))
        self.agent.start()
        await self._wait_health()

        scheduler = FaultScheduler(rig, _Injector(self))
        t0 = time.monotonic()
        start_wall = time.time()
        self.sampler.sample()
        cpu0 = self.sampler.total
        sampler = asyncio.create_task(self._watch(scheduler, t0, start_wall))
        timeline = asyncio.create_task(scheduler.run(t0))
        try:
            await asyncio.sleep(rig.duration_s)
        finally:
            timeline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timeline
            await scheduler.finish()
            self.sampler.sample()
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        end_wall = time.time()
        elapsed = time.monotonic() - t0
        cpu_used = self.sampler.total - cpu0

        await asyncio.to_thread(self.agent.stop, 15.0)
        if self.opts.on_progress is not None:
            last = self.samples[-1].last_seq if self.samples else None
            self.opts.on_progress(Snapshot(elapsed, rig.duration_s, stored=last, phase="drain"))
        # Processes stopped by a fault that ends at the very end are back by now (scheduler.finish).
        drain_s = await self._drain(drain_cfg)
        state = store_state(self.store_path)
        await asyncio.to_thread(self.receiver.stop)
        rows = await asyncio.to_thread(receiver_rows, self.db_url, self.site_id)

        record = RunRecord(
            rig,
            start_wall,
            end_wall,
            state.last_seq,
            rows,
            scheduler.windows,
            self.bank.ranges(),
            state.rejected,
        )
        verdict = evaluate(record)
        report = render(rig.rig, verdict, scheduler.windows, elapsed)
        stored = sum(1 for r in rows if start_wall <= r.ts <= end_wall)
        seqs = {r.seq for r in rows}
        keys = {(r.device, r.point, r.ts, repr(r.value)) for r in rows}
        return RunResult(
            rig=rig,
            verdict=verdict,
            windows=scheduler.windows,
            elapsed_s=elapsed,
            report=report,
            stored_per_s=stored / elapsed if elapsed > 0 else 0.0,
            offered_per_s=offered_rate(rig, self.kinds),
            agent_cpu_pct=100.0 * cpu_used / elapsed if elapsed > 0 else None,
            agent_rss_max_kib=self.sampler.rss_max or None,
            agent_starts=self.agent.starts,
            work_dir=self.work,
            lost=len(set(range(1, state.last_seq + 1)) - seqs),
            duplicates=(len(rows) - len(seqs)) + (len(seqs) - len(keys)),
            extra={"drain_s": drain_s},
            rows=rows,
            samples=list(self.samples),
            start_wall=start_wall,
            end_wall=end_wall,
        )

    async def _drained(self) -> bool:
        """The store holds nothing unacknowledged and the receiver holds every seq it handed out."""
        state = await asyncio.to_thread(store_state, self.store_path)
        count, top = await asyncio.to_thread(receiver_count, self.db_url, self.site_id)
        return state.depth == 0 and count == state.last_seq - len(state.rejected) and top <= state.last_seq

    async def _drain(self, drain_cfg: Path, rounds: int = 3) -> float:
        """Run the agent with no devices until everything its store holds reached the receiver.

        The condition must hold on two looks a second apart, and again once the drain agent has
        stopped; if it does not (something was committed late), another round runs.
        """
        self.agent.argv = agent_argv("run", "--config", str(drain_cfg))
        t0 = time.monotonic()
        deadline = t0 + self.rig.expect.drain_timeout_s
        for attempt in range(rounds):
            self.agent.start()
            try:
                await self._wait_health()
                held = 0
                while time.monotonic() < deadline and held < 2:
                    held = held + 1 if await self._drained() else 0
                    await asyncio.sleep(1.0 if held else 0.5)
            finally:
                await asyncio.to_thread(self.agent.stop, 15.0)
            if await self._drained():
                break
            if time.monotonic() >= deadline:
                log.warning("drain did not finish within %.0f s", self.rig.expect.drain_timeout_s)
                break
            log.info("drain round %d left readings behind; another round", attempt + 1)
        return time.monotonic() - t0
