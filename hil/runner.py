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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hil.devices import EmulatorBank
from hil.expect import RunRecord, Verdict, evaluate
from hil.procs import Broker, ManagedProcess, ProcessSet, agent_argv, agent_env, free_port
from hil.report import render
from hil.rig import (
    AgentKill,
    BrokerDown,
    GpioDevice,
    ModbusDevice,
    ReceiverRestart,
    Rig,
    SerialDevice,
    SystemDevice,
)
from hil.schedule import FaultScheduler, FaultWindow
from hil.sources import proc_cpu_seconds, proc_rss_kib, receiver_count, receiver_rows, store_state
from kernel.errors import HilFailure
from kernel.kinds import KindRegistry

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

    async def run(self, every_s: float = 1.0) -> None:
        while True:
            self.sample()
            await asyncio.sleep(every_s)

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
        else:
            r.bank.inject(fault, False)


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
        self.agent = self.procs.add(
            ManagedProcess("agent", [], self.work / "logs" / "agent.log", agent_env())
        )
        self.sampler = _CpuSampler(self.agent)

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

    def site_config(self, key: Path, devices: list[dict[str, Any]]) -> dict[str, Any]:
        """The site config the agent runs with."""
        a = self.rig.agent
        return {
            "version": 1,
            "site": {
                "id": self.site_id,
                "name": f"HIL rig {self.rig.rig}",
                "location": {"lat": 21.1861, "lon": 106.0763},
            },
            "devices": devices,
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

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Run the rig; always stops everything it started."""
        try:
            return await self._run()
        finally:
            await asyncio.to_thread(self.procs.stop_all)
            await self.bank.close()
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
        run_cfg = self._write_config("site.yaml", self.site_config(key, self.bank.site_devices(rig.agent)))
        drain_cfg = self._write_config("site-drain.yaml", self.site_config(key, []))
        await asyncio.to_thread(self.broker.start)
        self.receiver.argv = agent_argv(
            "receiver", "--broker", self.broker.url, "--allow-plaintext", "--db", self.db_url, "--sites",
            str(sites_file), "--signing-key", str(self.work / "keys" / "centre.key"),
        )
        self.receiver.start()
        self.agent.argv = agent_argv("run", "--config", str(run_cfg))
        self.agent.start()
        await self._wait_health()

        sampler = asyncio.create_task(self.sampler.run())
        scheduler = FaultScheduler(rig, _Injector(self))
        t0 = time.monotonic()
        start_wall = time.time()
        cpu0 = self.sampler.total
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
        end_wall = time.time()
        elapsed = time.monotonic() - t0
        cpu_used = self.sampler.total - cpu0

        await asyncio.to_thread(self.agent.stop, 15.0)
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
