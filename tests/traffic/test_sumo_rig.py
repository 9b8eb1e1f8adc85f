"""SUMO hardware-in-the-loop: the field controller code drives a simulated junction for an hour."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.sumo.rig import rig_intersection, run
from hil.sumo.scenario import build

pytestmark = pytest.mark.sumo


@pytest.fixture(scope="module")
def rig_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sumo")


def test_rig_plan_is_a_valid_intersection(rig_dir: Path) -> None:
    ix = rig_intersection(build(rig_dir)["net"])
    assert len(ix.groups) == 16
    assert ix.limits.yellow == 3.5
    assert {p.yield_ for p in ix.permissive} >= {"n_left", "s_left", "e_left", "w_left"}


@pytest.mark.parametrize("mode", ["fixed", "actuated", "adaptive"])
def test_simulated_hour_without_violation(rig_dir: Path, mode: str) -> None:
    r = run(mode, seed=1, out_dir=rig_dir)
    assert r.sim_s >= 3600
    assert r.violations == [], r.violations[:5]
    assert r.flashed is None
    assert r.tripped_at is None
    assert r.refusals == {}
    assert r.vehicles > 2000
    assert 0 < r.mean_delay_s < (100 if mode == "fixed" else 35)  # about 71 s fixed, 24 s otherwise (seed 1)
    assert r.ped_delay_s > 0  # pedestrians walk all hour (their flows are sorted in by departure)


def test_pedestrians_walk_from_the_first_minute(rig_dir: Path) -> None:
    """SUMO reads route files incrementally: person flows listed after the last vehicle slot only
    started in the last quarter-hour. In the first ten minutes some must already have crossed."""
    r = run("sumo_actuated", seed=1, duration_s=600, out_dir=rig_dir)
    assert r.ped_delay_s > 0
    assert r.violations == []


def test_detectors_failing_mid_run_degrade_to_max_recall_without_violation(rig_dir: Path) -> None:
    """Stuck-on, stuck-off and dead loops and dead camera zones from minute 15 of the hour: the
    board finds the failed loops, their groups run to max green, the dead zones' stages fall back
    to actuated timing, and the monitor sees no violation."""
    faults = {
        "loop_s_2": ("stuck_on", 900.0),
        "loop_n_1": ("stuck_off", 900.0),
        "loop_e_1": ("dead", 900.0),
        "zone_s_1": ("dead", 900.0),
        "zone_w_2": ("dead", 900.0),
    }
    r = run("adaptive", seed=3, out_dir=rig_dir, faults=faults)
    assert r.sim_s >= 3600
    assert r.violations == [], r.violations[:5]
    assert r.flashed is None
    assert r.refusals == {}
    assert r.detector_faults == {"loop_s_2": "stuck_on", "loop_n_1": "stuck_off", "loop_e_1": "stuck_off"}
    assert r.arrived > 2000
    assert r.mean_delay_s < 45  # about 25 s with healthy detectors: degraded, not collapsed


def test_the_fair_sumo_baseline_skips_empty_left_bays_and_walks_first(rig_dir: Path) -> None:
    from hil.sumo.baseline import fair_phases

    ix = rig_intersection(build(rig_dir)["net"])
    phases = fair_phases(ix, skip_lefts=True)
    names = [p.name for p in phases]
    assert names[:3] == ["ns_through:walk", "ns_through:fdw", "ns_through:ext"]
    ext = phases[2]
    assert ext.next == ["ns_through>ns_left:y", "ns_through>ew_through:y"]
    to_left = phases[names.index("ns_through>ns_left:y")]
    assert to_left.final_target == "a:zone_n_3 + a:zone_s_3 > 0"
    assert to_left.early_target is not None
    assert "z:loop_n_1 > 3" in to_left.early_target
    assert phases[0].shown["e_ped"] == "G"
    assert phases[1].shown["e_ped"] == "r"


def test_forced_conflict_below_the_envelope_is_caught_and_flashes(rig_dir: Path) -> None:
    r = run("adaptive", seed=2, duration_s=300, inject_conflict_at=150, out_dir=rig_dir)
    assert r.tripped_at is not None
    assert 150 <= r.tripped_at <= 152
    assert any(v.rule == "conflict" for v in r.violations)
    assert r.flashed in ("readback_mismatch", "readback_invalid")
    assert r.flashed_at is not None
    assert r.flashed_at - 150 <= 1.0
    assert r.final_state is not None
    assert set(r.final_state) <= {"o", "O"}


def test_sumo_readback_with_disagreeing_links_flashes(rig_dir: Path) -> None:
    import time

    import traci

    from control.traffic.envelope import SafetyEnvelope
    from drivers.signals.sumo import SumoSignals
    from hil.sumo.scenario import binary

    paths = build(rig_dir)
    ix = rig_intersection(paths["net"])
    assert ix.output is not None
    assert ix.output.driver == "sumo"
    label = f"readback-{time.monotonic_ns()}"
    traci.start([binary("sumo"), "-n", str(paths["net"]), "--no-step-log", "--no-warnings"], label=label)
    conn = traci.getConnection(label)
    try:
        out = SumoSignals(conn, "c", ix.output.links)
        env = SafetyEnvelope(ix, out, conn.simulation.getTime)
        env.start()
        conn.simulationStep()
        env.check()
        assert env.latched is None
        state = list(conn.trafficlight.getRedYellowGreenState("c"))
        state[ix.output.links["n_through"][0]] = "G"  # one of the group's two links: a crossed wire
        conn.trafficlight.setRedYellowGreenState("c", "".join(state))
        env.check()
        assert env.latched == "readback_invalid"
        assert set(conn.trafficlight.getRedYellowGreenState("c")) <= {"o", "O"}
    finally:
        conn.close()


def test_crosswalk_clearance_is_closed_to_sumo_pedestrians_and_still_monitored(rig_dir: Path) -> None:
    """SUMO's pedestrians enter a crossing showing ``y`` as on green: the clearance is written as
    ``u`` (closed to them), read back as ``y``, and the monitor still counts it as occupied."""
    import time

    import traci

    from drivers.signals.indications import Indication
    from drivers.signals.sumo import SumoSignals
    from hil.sumo.monitor import link_monitor
    from hil.sumo.scenario import binary

    paths = build(rig_dir)
    ix = rig_intersection(paths["net"])
    assert ix.output is not None
    assert ix.output.driver == "sumo"
    links = ix.output.links
    label = f"pedclear-{time.monotonic_ns()}"
    traci.start([binary("sumo"), "-n", str(paths["net"]), "--no-step-log", "--no-warnings"], label=label)
    conn = traci.getConnection(label)
    try:
        out = SumoSignals(conn, "c", links, [g.name for g in ix.groups if g.kind == "pedestrian"])
        state = dict.fromkeys(links, Indication.RED) | {"e_ped": Indication.YELLOW}
        out.write(state, 1)
        shown = conn.trafficlight.getRedYellowGreenState("c")
        assert {shown[i] for i in links["e_ped"]} == {"u"}
        assert out.read_back().indications["e_ped"] == Indication.YELLOW
    finally:
        conn.close()
    monitor = link_monitor(paths["net"], "c", links, list(ix.permissive))
    n = 1 + max(i for ls in links.values() for i in ls)
    chars = ["r"] * n
    for i in links["e_ped"]:
        chars[i] = "u"
    foe = next(iter(monitor.foes[links["e_ped"][0]]))
    chars[foe] = "G"
    assert any(v.rule == "conflict" for v in monitor.observe("".join(chars), 10.0))
