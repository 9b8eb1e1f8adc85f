"""The corridor rig both corridor e2e tests run: three ``edge-agent run`` junctions (each with an
emulated signal controller over Modbus TCP, loops on rig pins and a GPS on a pty), the receiver into
SQLite and the centre's keys and sites file, all stopped on exit."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import yaml

from control.traffic.card import program_card
from control.traffic.config import IntersectionConfig
from drivers.nmea.emulator import NmeaEmulator
from drivers.signals.emulator import ControllerEmulator, ModbusSignalEmulator
from hil.pins import PinServer
from sync.signing import generate_keypair
from tests.brokers import Mosquitto
from tests.conftest import agent_argv, agent_env, free_port
from tests.sync.conftest import query
from tests.traffic.corridor_sites import LOOP_PINS, SITES, junction, write_corridor


def _cabinet(port: int, k: int) -> tuple[ControllerEmulator, ModbusSignalEmulator]:
    # The monitor card a little below the plan's minimums, as field cards are programmed (see
    # test_traffic_agent.py): the envelope enforces the exact minimums.
    card = program_card(IntersectionConfig.model_validate(junction(k, port)))
    card = dataclasses.replace(
        card,
        min_yellow_s=card.min_yellow_s - 0.3,
        min_red_clear_s=card.min_red_clear_s - 0.3,
        min_green_s=card.min_green_s - 0.3,
        min_walk_s=card.min_walk_s - 0.3,
        min_ped_clear_s=card.min_ped_clear_s - 0.3,
    )
    emu = ControllerEmulator(card, watchdog_s=2.0)
    server = ModbusSignalEmulator(emu, port=port)
    server.start()
    return emu, server


class _Loops:
    """Vehicles over every junction's loops: westbound arrivals (loop_e) three times as often as
    eastbound (loop_w), a side-street vehicle now and then."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pins = PinServer(path)
        self._call(self.pins.start())
        self._stop = threading.Event()
        self._driver = threading.Thread(target=self._drive, daemon=True)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def _drive(self) -> None:
        tick = 0
        while not self._stop.wait(0.25):
            tick += 1
            for name, every in (("loop_e", 4), ("loop_w", 12), ("loop_ns", 8)):
                if tick % every in (0, 1):  # occupied for a quarter second out of ``every``
                    # pull-up inputs: a loop's relay closes to ground when occupied
                    self._call(self.pins.set(LOOP_PINS[name], tick % every == 1))

    def start(self) -> None:
        self._driver.start()

    def close(self) -> None:
        self._stop.set()
        self._driver.join(2)
        self._call(self.pins.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(2)


class CorridorRig:
    """Everything but the broker, made on entry and stopped on exit; :meth:`start` runs the receiver
    and the three agents against a broker."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.ports = [free_port() for _ in SITES]
        self.corridor = write_corridor(tmp_path / "centre", self.ports)
        self.centre_key, self.centre_pub = generate_keypair(tmp_path / "keys", "centre")
        self.site_keys = [generate_keypair(tmp_path / "keys", s) for s in SITES]
        self.sites_file = tmp_path / "sites.yaml"
        self.sites_file.write_text(yaml.safe_dump({"sites": {s: {"public_keys": [str(pub)]} for s, (_, pub) in
                                                             zip(SITES, self.site_keys, strict=True)}}))  # fmt: skip
        self.db = f"sqlite:///{tmp_path / 'centre.db'}"
        self.env = agent_env(KBE_GPIO_RIG_SOCKET=str(tmp_path / "pins.sock"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agents: dict[int, subprocess.Popen[bytes]] = {}
        self.run_files: list[Path] = []
        self.cabinets: list[tuple[ControllerEmulator, ModbusSignalEmulator]] = []
        self.gps: list[NmeaEmulator] = []
        self.loops: _Loops | None = None

    def __enter__(self) -> CorridorRig:
        try:
            self.cabinets = [_cabinet(port, k) for k, port in enumerate(self.ports)]
            self.gps = [NmeaEmulator(interval_s=0.5, seed=k) for k in range(len(SITES))]
            self.gps_paths = [g.start() for g in self.gps]
            self.loops = _Loops(self.tmp / "pins.sock")
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self, broker: Mosquitto, traffic: dict[str, Any] | None = None) -> None:
        """The receiver, then each junction's agent (its config from the corridor's site file, with
        ``traffic`` merged into its traffic section), then the vehicles over the loops."""
        self.procs.append(subprocess.Popen(
            agent_argv("receiver", "--broker", broker.url, "--allow-plaintext", "--db", self.db,
                       "--sites", str(self.sites_file), "--signing-key", str(self.centre_key)),
            env=self.env, stdout=open(self.tmp / "rx.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        ))  # fmt: skip
        for k, site in enumerate(SITES):
            doc = yaml.safe_load((self.tmp / "centre" / f"{site}.yaml").read_text())
            doc["devices"].append({"driver": "nmea_gps", "name": "gps", "period_s": 1,
                                   "line": {"type": "pty", "path": self.gps_paths[k]}})  # fmt: skip
            doc["sync"] = {
                "broker": broker.url,
                "signing_key_file": str(self.site_keys[k][0]),
                "command_public_keys": [str(self.centre_pub)],
                "centre_public_keys": [str(self.centre_pub)],
                "allow_plaintext": True,
                "keepalive_s": 5,
            }
            doc["store"] = {"path": str(self.tmp / f"store-{k}.db"), "commit_interval_s": 0.2}
            doc["traffic"].update({key: (v.format(k=k) if isinstance(v, str) else v)
                                   for key, v in (traffic or {}).items()})  # fmt: skip
            self.run_files.append(self.tmp / f"run-{site}.yaml")
            self.run_files[k].write_text(yaml.safe_dump(doc))
            self.start_agent(k)
        assert self.loops is not None
        self.loops.start()

    def start_agent(self, k: int) -> None:
        """(Re)start junction ``k``'s agent on its run file; its log is appended to."""
        log = open(self.tmp / f"agent-{k}.log", "ab")  # noqa: SIM115
        self.agents[k] = subprocess.Popen(agent_argv("run", "--config", str(self.run_files[k])), env=self.env,
                                          stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append(self.agents[k])

    def stored(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of the receiver's database; none until the receiver has made its tables."""
        try:
            return query(self.db, sql)
        except sqlite3.OperationalError:
            return []

    def coordinate(self, broker: Mosquitto) -> subprocess.CompletedProcess[str]:
        """One ``edge-agent centre coordinate`` round over the corridor, waiting 15 s for replies."""
        return subprocess.run(
            agent_argv("centre", "coordinate", "--corridor", str(self.corridor), "--db", self.db, "--broker",
                       broker.url, "--allow-plaintext", "--key", str(self.centre_key), "--sites",
                       str(self.sites_file), "--wait", "15"),
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def __exit__(self, *_exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.loops is not None:
            self.loops.close()
        for g in self.gps:
            g.stop()
        for _, server in self.cabinets:
            server.stop()
