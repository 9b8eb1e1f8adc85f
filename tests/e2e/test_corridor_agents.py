"""A coordinated corridor through the real path: three ``edge-agent run`` junctions report their
loop counts, the receiver stores them, ``edge-agent centre coordinate`` computes the next plan and
sends it, and each junction takes it up at a cycle boundary without its envelope tripping.

Real parts: three agents as subprocesses; a private Mosquitto; ``edge-agent receiver`` into SQLite;
``edge-agent centre coordinate`` as a subprocess. Emulated (no field hardware here): each junction's
signal controller (drivers/signals/emulator, over Modbus TCP by pymodbus in this process), its loop
detectors (gpio ``pin_factory: rig``: mock pins whose levels this test sets through hil/pins.py's
socket) and its GPS (drivers/nmea/emulator on a pty), whose fix synchronises the agent's clock: the
shared time base coordination needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import threading
import time
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
from tests.sync.conftest import query, wait_for
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


def test_the_centre_coordinates_three_running_junctions_from_their_counts(tmp_path: Path) -> None:
    ports = [free_port() for _ in SITES]
    corridor = write_corridor(tmp_path / "centre", ports)
    cabinets = [_cabinet(port, k) for k, port in enumerate(ports)]
    gps = [NmeaEmulator(interval_s=0.5, seed=k) for k in range(len(SITES))]
    gps_paths = [g.start() for g in gps]
    loops = _Loops(tmp_path / "pins.sock")
    centre_key, centre_pub = generate_keypair(tmp_path / "keys", "centre")
    site_keys = [generate_keypair(tmp_path / "keys", s) for s in SITES]
    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(yaml.safe_dump({"sites": {s: {"public_keys": [str(pub)]} for s, (_, pub) in
                                                    zip(SITES, site_keys, strict=True)}}))  # fmt: skip
    db = f"sqlite:///{tmp_path / 'centre.db'}"
    procs: list[subprocess.Popen[bytes]] = []
    env = agent_env(KBE_GPIO_RIG_SOCKET=str(tmp_path / "pins.sock"))
    t0 = time.monotonic()
    with Mosquitto(tmp_path / "broker") as broker:
        try:
            procs.append(subprocess.Popen(
                agent_argv("receiver", "--broker", broker.url, "--allow-plaintext", "--db", db,
                           "--sites", str(sites_file), "--signing-key", str(centre_key)),
                env=env, stdout=open(tmp_path / "rx.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            ))  # fmt: skip
            for k, site in enumerate(SITES):
                cfg_file = tmp_path / "centre" / f"{site}.yaml"
                doc = yaml.safe_load(cfg_file.read_text())
                doc["devices"].append({"driver": "nmea_gps", "name": "gps", "period_s": 1,
                                       "line": {"type": "pty", "path": gps_paths[k]}})  # fmt: skip
                doc["sync"] = {
                    "broker": broker.url,
                    "signing_key_file": str(site_keys[k][0]),
                    "command_public_keys": [str(centre_pub)],
                    "centre_public_keys": [str(centre_pub)],
                    "allow_plaintext": True,
                    "keepalive_s": 5,
                }
                doc["store"] = {"path": str(tmp_path / f"store-{k}.db"), "commit_interval_s": 0.2}
                run_file = tmp_path / f"run-{site}.yaml"
                run_file.write_text(yaml.safe_dump(doc))
                log = open(tmp_path / f"agent-{k}.log", "wb")  # noqa: SIM115
                procs.append(subprocess.Popen(agent_argv("run", "--config", str(run_file)), env=env,
                                              stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            loops.start()

            def stored(sql: str) -> list[tuple[Any, ...]]:
                try:
                    return query(db, sql)
                except sqlite3.OperationalError:  # the receiver has not created its tables yet
                    return []

            # Every junction coordinated on its GPS-synchronised clock, and its westbound arrivals counted.
            wait_for(lambda: len(stored("SELECT DISTINCT site_id FROM readings WHERE point = 'coordination' "
                                        "AND value_text = 'coordinated'")) == 3, 120, "three coordinated junctions")  # fmt: skip
            wait_for(lambda: len(stored("SELECT DISTINCT site_id FROM readings WHERE point = "
                                        "'detector.loop_e.count' AND value > 0")) == 3, 30, "counts from three junctions")  # fmt: skip
            out = subprocess.run(
                agent_argv("centre", "coordinate", "--corridor", str(corridor), "--db", db, "--broker", broker.url,
                           "--allow-plaintext", "--key", str(centre_key), "--sites", str(sites_file), "--wait", "15"),
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
            assert "test-corridor: cycle 25 s" in out.stdout  # busier than the 20 s plan: one step up
            for k, site in enumerate(SITES):
                assert f"{site}/j{k + 1}: " in out.stdout
                assert any(line.startswith(f"{site}/j{k + 1}: ") and " accepted coordination: cycle 25 s" in line
                           for line in out.stdout.splitlines()), out.stdout  # fmt: skip
            plan = yaml.safe_load((tmp_path / "centre" / "corridor.plan.json").read_text())
            assert plan["cycle_s"] == 25.0
            # Each junction takes it up at its coordinated stage's first start from the plan's anchor on.
            wait_for(lambda: len(stored("SELECT DISTINCT site_id FROM readings WHERE point = 'coordination.plan' "
                                        "AND value_text LIKE 'cycle 25 s%'")) == 3, 120, "three junctions on the new plan")  # fmt: skip
            taken = stored("SELECT site_id, value_text, meta FROM readings WHERE point = 'coordination.plan'")
            for site, text, meta in taken:
                k = SITES.index(site)
                start = plan["anchor_s"] + plan["offsets_s"][k]
                assert text == f"cycle 25 s, start {start % 25:g} s", (site, text)
                assert float(yaml.safe_load(meta)["taken_at"]) >= plan["anchor_s"] - 0.5  # not before its from
            alarms = stored("SELECT site_id, device, point, value_text FROM readings WHERE priority = 0")
            assert alarms == [], alarms
            # Free until its GPS fix synchronised the clock, then coordinated throughout.
            events = stored("SELECT site_id, value_text FROM readings WHERE point = 'coordination' ORDER BY ts")
            for site in SITES:
                seen = [v for s, v in events if s == site]
                assert "free" not in seen[seen.index("coordinated"):], (site, seen)
            for emu, _ in cabinets:
                assert emu.monitor.faults == []
                assert emu.fault is None
            assert all(p.poll() is None for p in procs)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            loops.close()
            for g in gps:
                g.stop()
            for _, server in cabinets:
                server.stop()
    assert time.monotonic() - t0 < 120
