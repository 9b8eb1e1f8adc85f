"""A junction keeps the centre's coordination plan through a crash: three ``edge-agent run``
junctions take a plan from ``edge-agent centre coordinate``; the middle one is SIGKILLed and started
again, and it runs the centre's plan again without another round from the centre.

The same real and emulated parts as tests/e2e/test_corridor_agents.py (Mosquitto, ``edge-agent
receiver``, emulated cabinets over Modbus TCP, loops on rig pins, GPS on ptys).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from drivers.nmea.emulator import NmeaEmulator
from sync.signing import generate_keypair
from tests.brokers import Mosquitto
from tests.conftest import agent_argv, agent_env, free_port
from tests.e2e.test_corridor_agents import _cabinet, _Loops
from tests.sync.conftest import query, wait_for
from tests.traffic.corridor_sites import SITES, write_corridor

RESTARTED = 1  # the middle junction, j2


def test_a_restarted_junction_runs_the_centres_plan_again_without_a_new_round(tmp_path: Path) -> None:
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
    env = agent_env(KBE_GPIO_RIG_SOCKET=str(tmp_path / "pins.sock"))
    procs: list[subprocess.Popen[bytes]] = []
    agents: dict[int, subprocess.Popen[bytes]] = {}

    def stored(sql: str) -> list[tuple[Any, ...]]:
        try:
            return query(db, sql)
        except sqlite3.OperationalError:  # the receiver has not created its tables yet
            return []

    def start_agent(k: int, run_file: Path) -> None:
        log = open(tmp_path / f"agent-{k}.log", "ab")  # noqa: SIM115
        agents[k] = subprocess.Popen(agent_argv("run", "--config", str(run_file)), env=env,
                                     stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(agents[k])

    def plans(site: str) -> list[tuple[float, str, dict[str, str]]]:
        rows = stored(f"SELECT ts, value_text, meta FROM readings WHERE point = 'coordination.plan' "
                      f"AND site_id = '{site}' ORDER BY ts")  # fmt: skip
        return [(ts, text, json.loads(meta)) for ts, text, meta in rows]

    with Mosquitto(tmp_path / "broker") as broker:
        try:
            procs.append(subprocess.Popen(
                agent_argv("receiver", "--broker", broker.url, "--allow-plaintext", "--db", db,
                           "--sites", str(sites_file), "--signing-key", str(centre_key)),
                env=env, stdout=open(tmp_path / "rx.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            ))  # fmt: skip
            run_files: list[Path] = []
            for k, site in enumerate(SITES):
                doc = yaml.safe_load((tmp_path / "centre" / f"{site}.yaml").read_text())
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
                doc["traffic"]["state_dir"] = f"state-{k}"  # relative to the config file's folder
                run_files.append(tmp_path / f"run-{site}.yaml")
                run_files[k].write_text(yaml.safe_dump(doc))
                start_agent(k, run_files[k])
            loops.start()
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
            centre_plan = (tmp_path / "centre" / "corridor.plan.json").read_bytes()
            plan = json.loads(centre_plan)
            assert plan["cycle_s"] == 25.0  # the configured plans have a 20 s cycle
            site = SITES[RESTARTED]
            wait_for(
                lambda: any(t.startswith("cycle 25 s") for _, t, _ in plans(site)), 60, "j2 on the new plan"
            )
            (_, first_text, first_meta) = plans(site)[0]
            assert first_meta["source"] == "command"
            kept = tmp_path / f"state-{RESTARTED}" / "j2.coordination.json"
            assert stat.S_IMODE(kept.stat().st_mode) == 0o600
            assert json.loads(kept.read_text())["command_id"] == first_meta["command_id"]

            agents[RESTARTED].send_signal(signal.SIGKILL)
            agents[RESTARTED].wait(10)
            killed_at = time.time()
            start_agent(RESTARTED, run_files[RESTARTED])

            def again() -> list[tuple[float, str, dict[str, str]]]:
                return [p for p in plans(site) if p[0] > killed_at]

            wait_for(lambda: again() != [], 90, "j2 back on the centre's plan after its restart")
            (_, text, meta) = again()[0]
            assert text == first_text  # the same cycle and start as before the crash
            assert (meta["source"], meta["command_id"]) == ("kept", first_meta["command_id"])
            # Coordinated again once its GPS fix is back, and no new round was needed for it.
            wait_for(lambda: stored(f"SELECT 1 FROM readings WHERE site_id = '{site}' AND point = 'coordination' "
                                    f"AND value_text = 'coordinated' AND ts > {killed_at}") != [],
                     60, "j2 coordinated again")  # fmt: skip
            assert (tmp_path / "centre" / "corridor.plan.json").read_bytes() == centre_plan
            dropped = stored("SELECT site_id, value_text FROM readings WHERE point = 'coordination.dropped'")
            assert dropped == [], dropped
            alarms = stored("SELECT site_id, device, point, value_text FROM readings WHERE priority = 0")
            assert alarms == [], alarms
            for k, (emu, _) in enumerate(cabinets):
                assert emu.fault is None, (k, emu.fault)
            assert all(p.poll() is None for p in agents.values())
        finally:
            for p in procs:
                if p.poll() is None:
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
