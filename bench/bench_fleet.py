"""Fleet simulation: many agent cores behind a real broker and receiver, updated in waves.

Worker processes host the agent cores, up to ``--per-process`` each (paho-mqtt's network loop uses
``select()``, which cannot watch file descriptors above 1024, and a core holds about ten). Each core
has its own site id, Ed25519 key, SQLite store, update folder and MQTT connection and runs the real
runtime: ``agent.app.run_site``, Modbus polling of an emulated SDM120 over TCP, the uplink, the
update manager and its health gate. A private Mosquitto
and the reference receiver (``edge-agent receiver`` on SQLite, a subprocess) stand for the centre;
the centre's wave driver (``provisioning.centre.waves``) rolls updates out over MQTT.

Scenario: a good release (a config patch) rolls out in waves (canary, then growing waves) to every
site; then a bad one (a config that points the meter at a closed port, so polling breaks) is sent:
the canary sites roll themselves back, the rollout stops there, and no other site receives it.

Run: PYTHONPATH=. python bench/bench_fleet.py [--agents 200] [--watch 10] [--per-process 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.app import run_site
from agent.update.manager import UpdateManager
from agent.update.merge import make_merge_patch
from drivers.modbus.emulator import EmulatedDevice, Emulator
from drivers.modbus.profile import load_profile
from hil.procs import ManagedProcess, agent_argv, agent_env, free_port
from kernel.kinds import KindRegistry
from provisioning.centre.link import CentreLink, make_command
from provisioning.centre.waves import RolloutResult, plan_waves, rollout
from sync.mqtt import LinkOptions
from sync.signing import Signer, SiteRegistry, generate_keypair, sign_command
from tests.brokers import Mosquitto


class _Meters:
    """One Modbus TCP emulator (an SDM120 at unit 1) on its own event loop; every site polls it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.emu = Emulator()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        dev = EmulatedDevice(load_profile("eastron-sdm120"), 1, seed=1)
        self.port = asyncio.run_coroutine_threadsafe(self.emu.add_tcp([dev]), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.emu.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Fleet:
    """N agent cores in one process, a private broker, the reference receiver."""

    work: Path
    agents: int
    canary: int = 2
    poll_s: float = 5.0
    per_process: int = 50
    sites: list[str] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meters = _Meters()
        self.broker = Mosquitto(self.work / "broker")
        self.db_url = f"sqlite:///{self.work / 'centre.db'}"
        self.workers: list[ManagedProcess] = []
        self.receiver: ManagedProcess | None = None
        self.link: CentreLink | None = None

    def _site_doc(self, site: str, keys: Path) -> dict[str, Any]:
        d = self.work / "sites" / site
        return {
            "site": {"id": site, "name": f"Fleet {site}", "location": {"lat": 21.18, "lon": 106.07}},
            "devices": [{"driver": "modbus", "name": "meter-1", "profile": "eastron-sdm120", "unit": 1,
                         "line": {"type": "tcp", "host": "127.0.0.1", "port": self.meters.port},
                         "poll": {"fast_s": self.poll_s, "slow_s": self.poll_s * 4},
                         "timeout_s": 0.5, "backoff_max_s": 2.0}],
            "sync": {"broker": self.broker.url, "allow_plaintext": True,  # the bench's own broker on the loopback
                     "signing_key_file": str(keys / "site.key"),
                     "command_public_keys": [str(self.work / "centre" / "centre.pub")],
                     "centre_public_keys": [str(self.work / "centre" / "centre.pub")],
                     "keepalive_s": 10, "ack_timeout_s": 10, "reconnect_min_s": 0.5, "reconnect_max_s": 3.0,
                     "batch": {"max_age_s": 2.0, "max_count": 500}},
            "store": {"path": str(d / "store.db"), "commit_interval_s": 0.2},
            "health": {"listen": None},
            "logging": {"level": "WARNING"},
            "update": {"dir": str(d / "updates"), "grace_s": 2.0},
        }

    def start(self) -> None:
        """Keys, configs, broker, receiver, every agent core; returns when every site is online."""
        self.broker.__enter__()
        generate_keypair(self.work / "centre", "centre")
        registry: dict[str, Any] = {"sites": {}}
        for i in range(self.agents):
            site = f"fleet-{i:04d}"
            d = self.work / "sites" / site
            _, pub = generate_keypair(d, "site")
            doc = self._site_doc(site, d)
            (d / "site.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            self.sites.append(site)
            self.configs[site] = doc
            registry["sites"][site] = {"public_keys": [str(pub)], "groups": ["canary"] if i < self.canary else []}
        (self.work / "sites.yaml").write_text(yaml.safe_dump(registry))
        self.receiver = ManagedProcess(
            "receiver",
            agent_argv("receiver", "--broker", self.broker.url, "--allow-plaintext", "--db", self.db_url,
                       "--sites", str(self.work / "sites.yaml"),
                       "--signing-key", str(self.work / "centre" / "centre.key"), "--log-level", "WARNING"),
            self.work / "receiver.log",
            agent_env(),
        )
        self.receiver.start()
        self.link = CentreLink(
            LinkOptions(broker=self.broker.url, client_id=f"fleet-centre-{os.getpid()}"),
            Signer.from_file(self.work / "centre" / "centre.key"),
            SiteRegistry.load(self.work / "sites.yaml"),
        ).start()
        for n in range(0, len(self.sites), self.per_process):
            name = f"worker-{n // self.per_process}"
            listing = self.work / f"{name}.txt"
            paths = [str(self.work / "sites" / s / "site.yaml") for s in self.sites[n : n + self.per_process]]
            listing.write_text("\n".join(paths))
            worker = ManagedProcess(
                name, [sys.executable, str(Path(__file__).resolve()), "--worker", str(listing)],
                self.work / f"{name}.log", agent_env(),
            )  # fmt: skip
            worker.start()
            self.workers.append(worker)
        deadline = time.monotonic() + 60 + self.agents * 0.5
        while not self.link.wait(lambda: self.online() == len(self.sites), 10):
            print(f"  {self.online()} of {len(self.sites)} sites online", flush=True)
            dead = [w.name for w in self.workers if not w.running()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"only {self.online()} of {len(self.sites)} sites came online (dead: {dead})")

    def online(self) -> int:
        """Sites whose retained status says online."""
        assert self.link is not None
        return sum(1 for s in self.sites if (st := self.link.status.get(s)) is not None and st.state == "online")

    def version(self, site: str) -> int | None:
        """The config version a site last reported."""
        assert self.link is not None
        st = self.link.status.get(site)
        return st.config_version if st is not None else None

    def journal(self, site: str) -> dict[str, Any]:
        """A site's update journal as it is on its disk."""
        return json.loads((self.work / "sites" / site / "updates" / "journal.json").read_text())

    def stop(self) -> None:
        """Stop every worker (its agent cores shut down cleanly), the receiver, the broker and the meters."""
        for worker in self.workers:
            worker.stop(60.0)
        if self.link is not None:
            self.link.stop()
        if self.receiver is not None:
            self.receiver.stop()
        self.broker.__exit__(None, None, None)
        self.meters.close()

    # -- the scenario -----------------------------------------------------------------------------

    def good_patch(self, site: str, version: int) -> dict[str, Any]:
        """Poll a little faster: a harmless change, sent as a merge patch."""
        old = self.configs[site]
        new = {**old, "devices": [{**old["devices"][0], "poll": {"fast_s": self.poll_s * 0.8, "slow_s": self.poll_s * 4}}]}
        return {"old": old, "new": new, "version": version}

    def bad_patch(self, site: str, dead_port: int) -> dict[str, Any]:
        """The meter on a closed port: polling breaks."""
        old = self.configs[site]
        dev = old["devices"][0]
        return {**old, "devices": [{**dev, "line": {**dev["line"], "port": dead_port}}]}

    def roll(self, make_new: Any, version: int, watch_s: float, fractions: list[float]) -> RolloutResult:
        """Roll ``make_new(site) -> new config`` out as version ``version`` (merge patches) in waves."""
        assert self.link is not None
        waves = plan_waves(self.sites, self.canary, fractions)
        new_docs: dict[str, dict[str, Any]] = {}

        def body_for(site: str) -> dict[str, Any]:
            new = make_new(site)
            new_docs[site] = new
            base = self.version(site) or 0
            return {"type": "config", "version": version, "watch_s": watch_s,
                    "patch": make_merge_patch(self.configs[site], new), "base_version": base}  # fmt: skip

        result = rollout(self.link, waves, body_for, lambda s: self.version(s), max_failures=0,
                         wave_timeout_s=watch_s * 3 + 60, progress=lambda m: print(f"  {m}", flush=True),
                         rollback_watch_s=watch_s)  # fmt: skip
        for site in result.committed:
            self.configs[site] = new_docs[site]
        return result


def worker_main(listing: Path) -> None:
    """A worker process: run the agent cores of the site configs listed in ``listing`` until SIGTERM."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s: %(message)s")
    paths = [Path(p) for p in listing.read_text().split()]

    async def run() -> None:
        loop = asyncio.get_running_loop()
        # Every core hops to worker threads for SQLite commits and batch composition.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = []
        kinds = KindRegistry()
        for path in paths:
            cfg, updates = await asyncio.to_thread(UpdateManager.resolve, path, kinds)
            reload = lambda p=path: UpdateManager.resolve(p, kinds)  # noqa: E731
            tasks.append(asyncio.create_task(run_site(cfg, updates, reload, stop, kinds)))
            await asyncio.sleep(0.02)
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def wire_bytes(fleet: Fleet, site: str) -> tuple[int, int]:
    """Frame sizes of the good update as a merge patch and as the whole config."""
    old = fleet.configs[site]
    new = {**old, "logging": {"level": "INFO"}}
    signer = Signer.from_file(fleet.work / "centre" / "centre.key")
    patch = {"type": "config", "version": 99, "patch": make_merge_patch(old, new), "base_version": 1}
    whole = {"type": "config", "version": 99, "config": new}
    return (len(sign_command(make_command(site, "update", patch, 600), signer)),
            len(sign_command(make_command(site, "update", whole, 600), signer)))  # fmt: skip


def _gate_delay(reason: str) -> float:
    """Seconds from the first failed poll to the unhealthy verdict, from an agent's rollback reason."""
    import re

    m = re.search(r"first failure ([0-9.]+) s, unhealthy ([0-9.]+) s", reason)
    return round(float(m.group(2)) - float(m.group(1)), 2) if m else float("nan")


def scenario(fleet: Fleet, watch_s: float, fractions: list[float]) -> dict[str, Any]:
    """Good release to all in waves, then a bad one that must stop at the canary. Returns the figures."""
    t0 = time.monotonic()
    good = fleet.roll(lambda s: fleet.good_patch(s, 1)["new"], 1, watch_s, fractions)
    good_s = time.monotonic() - t0
    assert not good.stopped, f"the good release stopped: {good.waves[-1].failed}"
    assert sorted(good.committed) == fleet.sites
    fleet.link.wait(lambda: all(fleet.version(s) == 1 for s in fleet.sites), 30)  # type: ignore[union-attr]
    canary_wave = good.waves[0]
    one_site_s = canary_wave.ended - canary_wave.started

    dead = free_port()
    t1 = time.monotonic()
    bad = fleet.roll(lambda s: fleet.bad_patch(s, dead), 2, watch_s, fractions)
    bad_s = time.monotonic() - t1
    assert bad.stopped, "the bad release stops"
    assert len(bad.waves) == 1, "the bad release stops at the canary wave"
    wave = bad.waves[0]
    assert sorted(wave.failed) == sorted(fleet.sites[: fleet.canary])
    patch_bytes, whole_bytes = wire_bytes(fleet, fleet.sites[-1])
    return {
        "agents": fleet.agents,
        "waves": [len(w.sites) for w in good.waves],
        "one_site_publish_to_commit_s": round(one_site_s, 2),
        "fleet_publish_to_all_committed_s": round(good_s, 2),
        "bad_wave_publish_to_rolled_back_s": round(bad_s, 2),
        "bad_wave_first_to_last_rollback_reply_s": round((wave.rolled_back or 0) - (wave.first_failure or 0), 2),
        "gate_first_failure_to_verdict_s": max(_gate_delay(r) for r in wave.failed.values()),
        "bad_reasons": sorted(set(wave.failed.values()))[:2],
        "update_bytes_patch": patch_bytes,
        "update_bytes_whole": whole_bytes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--canary", type=int, default=2)
    ap.add_argument("--watch", type=float, default=10.0)
    ap.add_argument("--fractions", default="0.1,0.5", help="Cumulative wave sizes after the canary.")
    ap.add_argument("--work", default=None, help="Work folder to keep (default: a temporary one).")
    ap.add_argument("--per-process", type=int, default=50, help="Agent cores per worker process.")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(Path(args.worker))
        return
    ap_work = Path(args.work) if args.work else None
    with tempfile.TemporaryDirectory(prefix="kbe-fleet-") as tmp:
        if ap_work is not None:
            ap_work.mkdir(parents=True, exist_ok=False)
            tmp = str(ap_work)  # kept for inspection
        fleet = Fleet(Path(tmp), args.agents, canary=args.canary, per_process=args.per_process)
        t0 = time.monotonic()
        try:
            fleet.start()
            print(f"{args.agents} agent cores online in {time.monotonic() - t0:.1f} s; load {os.getloadavg()}",
                  flush=True)
            figures = scenario(fleet, args.watch, [float(f) for f in args.fractions.split(",")])
        finally:
            fleet.stop()
    figures["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
