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

import time
from pathlib import Path

import yaml

from tests.brokers import Mosquitto
from tests.e2e.corridor_rig import CorridorRig
from tests.sync.conftest import wait_for
from tests.traffic.corridor_sites import SITES


def test_the_centre_coordinates_three_running_junctions_from_their_counts(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with Mosquitto(tmp_path / "broker") as broker, CorridorRig(tmp_path) as rig:
        rig.start(broker)
        # Every junction coordinated on its GPS-synchronised clock, and its westbound arrivals counted.
        wait_for(lambda: len(rig.stored("SELECT DISTINCT site_id FROM readings WHERE point = 'coordination' "
                                    "AND value_text = 'coordinated'")) == 3, 120, "three coordinated junctions")  # fmt: skip
        wait_for(lambda: len(rig.stored("SELECT DISTINCT site_id FROM readings WHERE point = "
                                    "'detector.loop_e.count' AND value > 0")) == 3, 30, "counts from three junctions")  # fmt: skip
        out = rig.coordinate(broker)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "test-corridor: cycle 25 s" in out.stdout  # busier than the 20 s plan: one step up
        for k, site in enumerate(SITES):
            assert f"{site}/j{k + 1}: " in out.stdout
            assert any(line.startswith(f"{site}/j{k + 1}: ") and " accepted coordination: cycle 25 s" in line
                       for line in out.stdout.splitlines()), out.stdout  # fmt: skip
        plan = yaml.safe_load((tmp_path / "centre" / "corridor.plan.json").read_text())
        assert plan["cycle_s"] == 25.0
        # Each junction takes it up at its coordinated stage's first start from the plan's anchor on.
        wait_for(lambda: len(rig.stored("SELECT DISTINCT site_id FROM readings WHERE point = 'coordination.plan' "
                                    "AND value_text LIKE 'cycle 25 s%'")) == 3, 120, "three junctions on the new plan")  # fmt: skip
        taken = rig.stored("SELECT site_id, value_text, meta FROM readings WHERE point = 'coordination.plan'")
        for site, text, meta in taken:
            k = SITES.index(site)
            start = plan["anchor_s"] + plan["offsets_s"][k]
            assert text == f"cycle 25 s, start {start % 25:g} s", (site, text)
            assert float(yaml.safe_load(meta)["taken_at"]) >= plan["anchor_s"] - 0.5  # not before its from
        alarms = rig.stored("SELECT site_id, device, point, value_text FROM readings WHERE priority = 0")
        assert alarms == [], alarms
        # Free until its GPS fix synchronised the clock, then coordinated throughout.
        events = rig.stored("SELECT site_id, value_text FROM readings WHERE point = 'coordination' ORDER BY ts")
        for site in SITES:
            seen = [v for s, v in events if s == site]
            assert "free" not in seen[seen.index("coordinated"):], (site, seen)
        for emu, _ in rig.cabinets:
            assert emu.monitor.faults == []
            assert emu.fault is None
        assert all(p.poll() is None for p in rig.procs)
    assert time.monotonic() - t0 < 120
