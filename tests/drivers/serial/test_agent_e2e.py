"""The agent process with every serial kind and a gpio bank: readings from emulators reach its store."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import yaml

from drivers.nmea.emulator import NmeaEmulator
from drivers.pms.emulator import PmsEmulator
from drivers.sds011.emulator import Sds011Emulator
from kernel.readings import Priority
from sync.store import Store, stored_readings
from tests.conftest import agent_argv, agent_env

WANTED = {
    ("pm", "pm2_5"),
    ("pm", "n0_3"),
    ("dust", "pm10"),
    ("gps", "lat"),
    ("gps", "clock_offset"),
    ("cabinet", "lamp"),
    ("cabinet", "dim"),
    ("cabinet", "door"),
}


def _wait_for_points(db: Path, wanted: set[tuple[str, str]], proc: subprocess.Popen, timeout: float) -> None:
    """Poll the agent's store (read-only) until every wanted point has a reading; the machine may be slow."""
    end = time.monotonic() + timeout
    have: set[tuple[str, str]] = set()
    while time.monotonic() < end and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as con:
                    have = {(x.reading.device, x.reading.point) for x in stored_readings(con)}
            except sqlite3.OperationalError:
                pass  # not created yet, or busy
            if have >= wanted:
                return
        time.sleep(0.5)
    raise AssertionError(f"agent stored {sorted(have)}; missing {sorted(wanted - have)}")


def test_agent_stores_serial_and_gpio_readings(tmp_path: Path):
    emus = [
        PmsEmulator(fast=True, seed=1),
        Sds011Emulator(interval_s=0.3, seed=2),
        NmeaEmulator(interval_s=0.5),
    ]
    pms, sds, gps = (e.start() for e in emus)
    emus[0].faults.set(garbage=0.3, bad_checksum=0.2)
    cfg = {
        "site": {"id": "aq-e2e", "name": "Air station", "location": {"lat": 21.18, "lon": 106.07}},
        "store": {"path": str(tmp_path / "store.db")},
        "health": {"listen": None},
        "devices": [
            {"driver": "pms", "name": "pm", "line": {"type": "pty", "path": pms}, "period_s": 1},
            {"driver": "sds011", "name": "dust", "line": {"type": "pty", "path": sds}, "period_s": 1},
            {"driver": "nmea_gps", "name": "gps", "line": {"type": "pty", "path": gps}, "period_s": 1},
            {
                "driver": "gpio",
                "name": "cabinet",
                "report_period_s": 1,
                "outputs": [
                    {"name": "lamp", "pin": 17, "initial": 1},
                    {"name": "dim", "pin": 18, "kind": "pwm"},
                ],
                "inputs": [{"name": "door", "pin": 27, "kind": "door"}],
            },
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        agent_argv("run", "--config", str(path)),
        env=agent_env(KBE_GPIO_PIN_FACTORY="mock"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_points(tmp_path / "store.db", WANTED, proc, timeout=60.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        for e in emus:
            e.stop()
    assert proc.returncode == 0, out[-3000:]
    with Store(tmp_path / "store.db", "aq-e2e") as store:
        rows = [s.reading for s in store.pending(10_000)]
    points = {(r.device, r.point) for r in rows}
    assert {
        ("pm", "pm2_5"),
        ("pm", "n0_3"),
        ("dust", "pm10"),
        ("gps", "lat"),
        ("gps", "clock_offset"),
    } <= points
    assert {("cabinet", "lamp"), ("cabinet", "dim"), ("cabinet", "door")} <= points
    assert next(r for r in rows if r.point == "lamp").value == 1.0
    online = [r for r in rows if r.point == "online"]
    assert {r.device for r in online} == {"pm", "dust", "gps"}
    assert all(r.priority == Priority.EVENT for r in online)
