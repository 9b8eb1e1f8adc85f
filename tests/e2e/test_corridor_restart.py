"""A junction keeps the centre's coordination plan through a crash: three ``edge-agent run``
junctions take a plan from ``edge-agent centre coordinate``; the middle one is SIGKILLed and started
again, and it runs the centre's plan again without another round from the centre.

The same real and emulated parts as tests/e2e/test_corridor_agents.py (Mosquitto, ``edge-agent
receiver``, emulated cabinets over Modbus TCP, loops on rig pins, GPS on ptys).
"""

from __future__ import annotations

import json
import signal
import stat
import time
from pathlib import Path

from tests.brokers import Mosquitto
from tests.e2e.corridor_rig import CorridorRig
from tests.sync.conftest import wait_for
from tests.traffic.corridor_sites import SITES

RESTARTED = 1  # the middle junction, j2


def test_a_restarted_junction_runs_the_centres_plan_again_without_a_new_round(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker, CorridorRig(tmp_path) as rig:

        def plans(site: str) -> list[tuple[float, str, dict[str, str]]]:
            rows = rig.stored(f"SELECT ts, value_text, meta FROM readings WHERE point = 'coordination.plan' "
                              f"AND site_id = '{site}' ORDER BY ts")  # fmt: skip
            return [(ts, text, json.loads(meta)) for ts, text, meta in rows]

        rig.start(broker, traffic={"state_dir": "state-{k}"})  # relative to the config file's folder
        wait_for(lambda: len(rig.stored("SELECT DISTINCT site_id FROM readings WHERE point = 'coordination' "
                                    "AND value_text = 'coordinated'")) == 3, 120, "three coordinated junctions")  # fmt: skip
        wait_for(lambda: len(rig.stored("SELECT DISTINCT site_id FROM readings WHERE point = "
                                    "'detector.loop_e.count' AND value > 0")) == 3, 30, "counts from three junctions")  # fmt: skip
        out = rig.coordinate(broker)
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

        rig.agents[RESTARTED].send_signal(signal.SIGKILL)
        rig.agents[RESTARTED].wait(10)
        killed_at = time.time()
        rig.start_agent(RESTARTED)

        def again() -> list[tuple[float, str, dict[str, str]]]:
            return [p for p in plans(site) if p[0] > killed_at]

        wait_for(lambda: again() != [], 90, "j2 back on the centre's plan after its restart")
        (_, text, meta) = again()[0]
        assert text == first_text  # the same cycle and start as before the crash
        assert (meta["source"], meta["command_id"]) == ("kept", first_meta["command_id"])
        # Coordinated again once its GPS fix is back, and no new round was needed for it.
        wait_for(lambda: rig.stored(f"SELECT 1 FROM readings WHERE site_id = '{site}' AND point = 'coordination' "
                                f"AND value_text = 'coordinated' AND ts > {killed_at}") != [],
                 60, "j2 coordinated again")  # fmt: skip
        assert (tmp_path / "centre" / "corridor.plan.json").read_bytes() == centre_plan
        dropped = rig.stored("SELECT site_id, value_text FROM readings WHERE point = 'coordination.dropped'")
        assert dropped == [], dropped
        alarms = rig.stored("SELECT site_id, device, point, value_text FROM readings WHERE priority = 0")
        assert alarms == [], alarms
        for k, (emu, _) in enumerate(rig.cabinets):
            assert emu.fault is None, (k, emu.fault)
        assert all(p.poll() is None for p in rig.agents.values())
