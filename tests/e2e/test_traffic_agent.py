"""Traffic control in the running agent: a camera's zone counts drive actuated decisions, and the
centre's traffic commands are applied and answered.

Real parts: ``edge-agent run`` as a subprocess; a camera reading a video file (models/camera/synthetic)
through OpenCV with the motion detector; the emulated signal controller (drivers/signals/emulator)
served over Modbus TCP by pymodbus in this process; a private Mosquitto and a paho client as the
centre. The video is empty for its first 10 s, then vehicles come through the zone that watches the
side street: the side stage (skippable) must not run before the camera saw a vehicle, and must run
after.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from control.traffic.card import program_card
from control.traffic.config import IntersectionConfig
from drivers.signals.emulator import ControllerEmulator, ModbusSignalEmulator
from models.camera.synthetic import RoadScene
from sync.signing import Signer, generate_keypair, sign_command
from sync.store import stored_readings
from sync.wire import Command
from tests.brokers import Mosquitto
from tests.conftest import agent_argv, agent_env, free_port
from tests.e2e.test_commands import _Centre
from tests.sync.conftest import wait_for

SITE = "bn-cmd-01"  # the centre helper's site
FPS = 25.0
EMPTY_S = 10.0


def _junction(port: int) -> dict[str, Any]:
    return {
        "name": "main-side",
        "groups": [{"name": "main"}, {"name": "side"}],
        "conflicts": [["main", "side"]],
        "limits": {"speed_kmh": 60, "red_clearance_s": 1, "min_green_s": 4, "link_timeout_s": 0.9},
        "stages": [
            {"name": "main", "green": ["main"], "max_green_s": 6},
            {"name": "side", "green": ["side"], "skippable": True, "max_green_s": 5},
        ],
        "plans": [{"name": "base", "cycle_s": 30, "splits": {"main": 18, "side": 12}}],
        "schedule": {"entries": [{"day_type": "all", "start": "00:00", "plan": "base", "mode": "actuated"}]},
        "detectors": [
            {"name": "zone_side", "group": "side", "kind": "zone", "source": "cam-1", "input": "approach"}
        ],
        "output": {"driver": "modbus", "host": "127.0.0.1", "port": port, "timeout_s": 0.5},
    }


def _video(path: Path) -> Path:
    scene = RoadScene(width=320, height=180, frames=int(30 * FPS), seed=11, rate=0.05)
    scene.vehicles = [v for v in scene.vehicles if v.start >= EMPTY_S * FPS]
    assert scene.vehicles
    return scene.write(path, FPS)


def _rows(db: Path) -> list[tuple[float, str, str, Any]]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return [(x.reading.ts, x.reading.device, x.reading.point, x.reading.value)
                    for x in stored_readings(conn)]
    except sqlite3.OperationalError:  # not created yet
        return []


def _command(cid: str, body: dict[str, Any]) -> Command:
    now = time.time()
    return Command(command_id=cid, target=SITE, kind="traffic", issued_at=now, expires_at=now + 120, body=body)


def test_camera_zone_drives_actuated_decisions_and_commands_are_applied(tmp_path: Path) -> None:
    video = _video(tmp_path / "road.avi")
    port = free_port()
    junction = _junction(port)
    # The cabinet's monitor card holds the plan's exact minimums: the envelope times each change from
    # its confirmed read-back, so a write that crosses the network late shortens nothing it times.
    card = program_card(IntersectionConfig.model_validate(junction))
    emu = ControllerEmulator(card, watchdog_s=2.0)
    server = ModbusSignalEmulator(emu, port=port)
    server.start()
    site_key, site_pub = generate_keypair(tmp_path / "keys", "site")
    centre_key, centre_pub = generate_keypair(tmp_path / "keys", "centre")
    centre = Signer.from_file(centre_key)
    store = tmp_path / "store.db"
    with Mosquitto(tmp_path / "broker") as broker:
        cfg = {
            "site": {"id": SITE, "name": "Traffic e2e", "location": {"lat": 21.19, "lon": 106.08}},
            "devices": [
                {"driver": "traffic", "name": "signals"},
                {
                    "driver": "camera",
                    "name": "cam-1",
                    "url": str(video),
                    "loop": False,
                    "pace": True,
                    "zones": [
                        {
                            "name": "approach",
                            "polygon": [list(p) for p in RoadScene.zone.polygon],
                            "queue_speed": 0.5,
                        }
                    ],
                    "max_fps": 10,  # leaves CPU to the rest of a loaded test machine
                    "report_interval_s": 1,
                    "listener_interval_s": 0.5,
                },
            ],
            "sync": {
                "broker": broker.url,
                "signing_key_file": str(site_key),
                "command_public_keys": [str(centre_pub)],
                "centre_public_keys": [str(centre_pub)],
                "allow_plaintext": True,
                "keepalive_s": 5,
            },
            "store": {"path": str(store), "commit_interval_s": 0.2},
            "health": {"listen": None},
            "traffic": {"intersections": [junction]},
        }
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            agent_argv("run", "--config", str(path)), env=agent_env(), stdout=log, stderr=subprocess.STDOUT
        )
        hq = _Centre(broker.port, site_pub)
        try:

            def side_green_after_a_vehicle() -> bool:
                rows = _rows(store) if store.exists() else []
                seen = [ts for ts, d, p, v in rows if d == "cam-1" and p == "zone.approach.occupancy_max" and v]
                green = [ts for ts, d, p, v in rows if p == "signal.state" and "side=G" in str(v)]
                return bool(seen and green and max(green) > min(seen))

            deadline = time.monotonic() + 60
            while not side_green_after_a_vehicle():
                assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()[-3000:]
                time.sleep(0.5)
            rows = _rows(store)
            zone = [(ts, v) for ts, d, p, v in rows if d == "cam-1" and p == "zone.approach.occupancy_max"]
            states = [(ts, str(v)) for ts, d, p, v in rows if p == "signal.state"]
            first_vehicle = min(ts for ts, v in zone if v)
            # An empty road for the first 10 s of video: the camera saw nothing, and the controller
            # skipped the side stage every cycle (main green held through several max-green periods).
            empty = [v for ts, v in zone if ts < first_vehicle]
            assert empty
            assert not any(empty)
            before = [(ts, s) for ts, s in states if ts < first_vehicle]
            main_green = min(ts for ts, s in before if "main=G" in s)
            assert first_vehicle - main_green > 6.0  # longer than main's max green: side was skipped
            assert not any("side=G" in s for _, s in before), before
            # ...and once vehicles queue in the zone, the side street gets its green.
            first_side = min(ts for ts, s in states if "side=G" in s)
            assert first_vehicle <= first_side <= first_vehicle + 15
            assert emu.monitor.faults == []

            # The centre's commands, applied by the intersection's own thread and answered.
            def send(cid: str, body: dict[str, Any]) -> Any:
                hq.send(sign_command(_command(cid, body), centre), kind="traffic")
                reply = hq.reply_to(cid)
                assert reply.outcome == "accepted", reply.reason
                text = reply.reason or ""
                return json.JSONDecoder().raw_decode(text, text.index("{"))[0] if "{" in text else text

            plan = {"name": "p2", "cycle_s": 40, "splits": {"main": 24, "side": 16}}
            send("t-1", {"action": "set_plan", "intersection": "main-side", "plan": plan})
            send("t-2", {"action": "set_mode", "intersection": "main-side", "mode": "fixed", "plan": "p2"})
            status = send("t-3", {"action": "status", "intersection": "main-side"})
            assert isinstance(status, dict)
            assert (status["next_mode"], status["next_plan"]) == ("fixed", "p2")
            send("t-4", {"action": "flash", "intersection": "main-side", "reason": "police on site"})
            assert emu.fault == "flash_requested"
            assert emu.flashing
            send("t-5", {"action": "clear_flash", "intersection": "main-side", "operator": "nguyen.van.a"})
            assert emu.fault is None
            wait_for(lambda: not emu.flashing and emu.monitor.faults == [], 5, "the junction back in service")
            status = send("t-6", {"action": "status", "intersection": "main-side"})
            assert isinstance(status, dict)
            assert status["latched"] is None
        finally:
            hq.close()
            proc.terminate()
            proc.wait(30)
            log.close()
            server.stop()
    text = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in text
