"""Run the SUMO intersection for a simulated hour under the agent's controller or a SUMO program.

The agent modes drive the light through the same :class:`~control.traffic.runner.Intersection`
(controller -> envelope -> driver) used in the field, with :class:`drivers.signals.sumo.SumoSignals`
as the output. The independent :class:`~hil.sumo.monitor.LinkMonitor` reads the shown state after
every step and trips the light to flashing on any violation.

``python -m hil.sumo.rig --mode adaptive --seed 1 --scale 1.4`` prints one run's figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from control.traffic.config import IntersectionConfig
from control.traffic.runner import Intersection
from drivers.signals.sumo import SumoSignals
from hil.sumo import plan as planmod
from hil.sumo.baseline import fair_programs
from hil.sumo.monitor import LinkMonitor, Violation, link_monitor
from hil.sumo.scenario import ARMS, binary, build
from kernel.errors import HilFailure

AGENT_MODES = ("fixed", "actuated", "adaptive")
SUMO_PROGRAMS = {
    "sumo_static": "static",
    "sumo_actuated": "actuated",  # fairly configured (hil/sumo/baseline.py)
    "sumo_delay": "delay_based",  # fairly configured
    "sumo_actuated_old": "actuated_old",  # the old, handicapped configuration (labelled extra row)
    "sumo_delay_old": "delay_based_old",
}
BUILD_DIR = Path(tempfile.gettempdir()) / "kbe-sumo-rig"


@dataclass
class RunResult:
    """Figures of one simulated run."""

    mode: str
    seed: int
    scale: float
    mean_delay_s: float
    mean_depart_delay_s: float
    vehicles: int
    max_queue: int
    stops: float = 0.0  # mean stops per vehicle (SUMO waitingCount)
    ped_delay_s: float = 0.0  # mean pedestrian time loss
    arrived: int = 0  # vehicles that reached their destination within the hour (throughput)
    violations: list[Violation] = field(default_factory=list)
    flashed: str | None = None
    flashed_at: float | None = None
    tripped_at: float | None = None
    sim_s: float = 0.0
    wall_s: float = 0.0
    refusals: dict[str, int] = field(default_factory=dict)
    final_state: str | None = None
    # Every SERIES_S simulated seconds: (time, vehicles halting on the worst approach, findings so far).
    series: list[tuple[float, int, int]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # when each finished trip arrived
    detector_faults: dict[str, str] = field(default_factory=dict)  # what the board found failed


SERIES_S = 10.0
StepHook = Callable[[float, RunResult], None]


def rig_intersection(net: Path) -> IntersectionConfig:
    """The rig's intersection config, validated like a site config."""
    return IntersectionConfig.model_validate(planmod.intersection(net))


def sumo_programs(
    ix: IntersectionConfig,
    n_links: int,
    links: dict[str, list[int]],
    tls: str = planmod.TLS,
    prefix: str = "",
    offset: float = 0.0,
    coordinate: str | None = None,
) -> str:
    """SUMO's static program, its fairly configured actuated and delay_based ones
    (:mod:`hil.sumo.baseline`), and the old actuated and delay_based configuration (``*_old``: the
    extension before a fixed pedestrian clearance, every left stage run, 60 m delay range).
    A corridor junction passes its light, detector prefix, offset and coordinated stage."""
    from control.traffic.config import ped_clear_s, stage_min_green

    lim = ix.limits
    yellow = float(int(lim.yellow + 0.999))

    def text(shown: dict[str, str]) -> str:
        return planmod.link_states(n_links, links, shown)

    phases: list[tuple[float, float, float, str]] = []  # dur, min, max, state
    stages = ix.stages
    plan = ix.plans[0]
    for k, st in enumerate(stages):
        nxt = stages[(k + 1) % len(stages)]
        shown = dict.fromkeys(st.green, "G") | dict.fromkeys(st.yield_, "g")
        peds = [n for n in st.green if n.endswith("_ped")]
        fdw = max((ped_clear_s(ix, p) for p in peds), default=0.0)
        green = plan.splits[st.name] - yellow - lim.red_clearance_s
        mn = stage_min_green(ix, st) - fdw
        main = green - fdw
        phases.append((main, max(1.0, mn), st.max_green_s - fdw, text(shown)))
        if peds:
            phases.append((fdw, fdw, fdw, text({**shown, **dict.fromkeys(peds, "r")})))
            for p in peds:
                shown[p] = "r"
        keep = set(nxt.green) | set(nxt.yield_)
        ending = {n: ("y" if n not in keep else c) for n, c in shown.items() if c != "r"}
        phases.append((yellow, yellow, yellow, text({**shown, **ending})))
        phases.append(
            (
                lim.red_clearance_s,
                lim.red_clearance_s,
                lim.red_clearance_s,
                text({n: c for n, c in shown.items() if n in keep and c != "r"}),
            )
        )
    out = ["<additional>"]
    for pid, kind in (("static", "static"), ("actuated_old", "actuated"), ("delay_based_old", "delay_based")):
        off = offset if kind == "static" else 0.0  # the old actuated ones are uncoordinated
        out.append(f'<tlLogic id="{tls}" type="{kind}" programID="{pid}" offset="{off:g}">')
        if kind == "actuated":
            out += [
                '<param key="max-gap" value="3"/>',
                '<param key="detector-gap" value="2"/>',
                '<param key="jam-threshold" value="30"/>',
            ]
        if kind == "delay_based":
            out.append('<param key="detectorRange" value="60"/>')
        for dur, mn, mx, st_text in phases:
            if kind == "static" or mn == mx:
                out.append(f'<phase duration="{dur:g}" state="{st_text}"/>')
            else:
                out.append(f'<phase duration="{dur:g}" minDur="{mn:g}" maxDur="{mx:g}" state="{st_text}"/>')
        out.append("</tlLogic>")
    out.append(fair_programs(ix, n_links, links, tls, prefix, offset, coordinate))
    out.append("</additional>")
    return "\n".join(out) + "\n"



def start_sumo(traci: Any, paths: dict[str, Path], progs: Path, seed: int, duration_s: float, tripinfo: Path, name: str) -> Any:
    """Start SUMO on a built scenario under TraCI (1 s steps, no teleports, every trip written to
    ``tripinfo``, unfinished ones too); returns the connection, labelled ``name`` plus a unique suffix."""
    cmd = [
        binary("sumo"),
        "-n", str(paths["net"]),
        "-r", str(paths["rou"]),
        "-a", f"{paths['det']},{progs}",
        "--seed", str(seed),
        "--begin", "0",
        "--end", str(duration_s),
        "--step-length", "1",
        "--no-step-log",
        "--no-warnings",
        "--time-to-teleport", "-1",
        "--tripinfo-output", str(tripinfo),
        "--tripinfo-output.write-unfinished",
        "--device.tripinfo.probability", "1",
    ]  # fmt: skip
    label = f"{name}-{time.monotonic_ns()}"
    traci.start(cmd, label=label)
    return traci.getConnection(label)

def run(
    mode: str,
    seed: int = 1,
    scale: float = 1.0,
    duration_s: float = 3600.0,
    inject_conflict_at: float | None = None,
    out_dir: Path | None = None,
    on_step: StepHook | None = None,
    faults: dict[str, tuple[str, float]] | None = None,
) -> RunResult:
    """One run; ``inject_conflict_at`` forces conflicting greens below the envelope at that time;
    ``faults`` breaks detectors from a time on: ``{"loop_s_2": ("stuck_on", 1200.0)}``, with
    ``stuck_on`` (a loop always occupied), ``stuck_off`` (never) or ``dead`` (a loop or zone that
    reports nothing at all).

    ``on_step(sim_t, partial_result)`` is called every ``SERIES_S`` simulated seconds (progress).
    """
    import traci

    out_dir = out_dir or BUILD_DIR
    paths = build(out_dir, scale)
    ix = rig_intersection(paths["net"])
    assert ix.output is not None
    assert ix.output.driver == "sumo"
    links = ix.output.links
    n_links = 1 + max(i for ls in links.values() for i in ls)
    progs = out_dir / "x.tls.xml"
    progs.write_text(sumo_programs(ix, n_links, links))
    tripinfo = out_dir / f"trip.{mode}.{seed}.{scale:g}.xml"
    conn = start_sumo(traci, paths, progs, seed, duration_s, tripinfo, f"rig-{mode}-{seed}-{scale}")
    wall0 = time.monotonic()
    monitor = link_monitor(paths["net"], planmod.TLS, links, list(ix.permissive))
    result = RunResult(mode, seed, scale, 0.0, 0.0, 0, 0)
    try:
        _drive(conn, mode, ix, monitor, result, duration_s, inject_conflict_at, faults or {}, on_step)
    finally:
        conn.close()
    result.wall_s = time.monotonic() - wall0
    result.violations = monitor.violations
    _trip_stats(tripinfo, result)
    return result


def _drive(
    conn: Any,
    mode: str,
    ix: IntersectionConfig,
    monitor: LinkMonitor,
    result: RunResult,
    duration_s: float,
    inject_at: float | None,
    faults: dict[str, tuple[str, float]],
    on_step: StepHook | None = None,
) -> None:
    import traci.constants as tc

    tls = planmod.TLS
    assert ix.output is not None
    assert ix.output.driver == "sumo"
    links = ix.output.links
    now = [float(conn.simulation.getTime())]
    inter: Intersection | None = None
    if mode in SUMO_PROGRAMS:
        conn.trafficlight.setProgram(tls, SUMO_PROGRAMS[mode])
    else:
        out = SumoSignals(conn, tls, links, [g.name for g in ix.groups if g.kind == "pedestrian"])
        inter = Intersection(ix, out, lambda: now[0], mode=mode)  # type: ignore[arg-type]
        inter.start()
    loops = [f"loop_{a}_{lane}" for a in ARMS for lane in (1, 2, 3)]
    zones = [f"zone_{a}_{lane}" for a in ARMS for lane in (1, 2, 3)]
    edges = {a: (f"{a}_in", f"{a}_far") for a in ARMS}
    for d in loops:
        conn.inductionloop.subscribe(d, [tc.LAST_STEP_VEHICLE_NUMBER])
    for z in zones:
        conn.lanearea.subscribe(
            z, [tc.LAST_STEP_VEHICLE_NUMBER, tc.LAST_STEP_VEHICLE_HALTING_NUMBER, tc.JAM_LENGTH_METERS]
        )
    for es in edges.values():
        for e in es:
            conn.edge.subscribe(e, [tc.LAST_STEP_VEHICLE_HALTING_NUMBER])
    conn.simulationStep()
    now[0] = float(conn.simulation.getTime())
    injected = False
    while now[0] < duration_s:
        if inter is not None:
            broken = {d: f for d, (f, at) in faults.items() if now[0] >= at}
            loop_res = conn.inductionloop.getAllSubscriptionResults()
            for d in loops:
                occupied = loop_res[d][tc.LAST_STEP_VEHICLE_NUMBER] > 0
                if d in broken:
                    if broken[d] == "dead":
                        continue
                    occupied = broken[d] == "stuck_on"
                inter.board.loop(d, occupied)
            zone_res = conn.lanearea.getAllSubscriptionResults()
            for z in zones:
                if z in broken:
                    continue  # a dead camera zone: nothing arrives, its data goes stale
                zr = zone_res[z]
                inter.board.zone(
                    z,
                    zr[tc.LAST_STEP_VEHICLE_NUMBER],
                    zr[tc.LAST_STEP_VEHICLE_HALTING_NUMBER],
                    zr[tc.JAM_LENGTH_METERS],
                )
            inter.tick()
        if inject_at is not None and not injected and now[0] >= inject_at:
            injected = True
            state = list(conn.trafficlight.getRedYellowGreenState(tls))
            for g in ("n_through", "e_through"):
                for i in links[g]:
                    state[i] = "G"
            conn.trafficlight.setRedYellowGreenState(tls, "".join(state))  # below the envelope
        conn.simulationStep()
        now[0] += 1.0
        shown = conn.trafficlight.getRedYellowGreenState(tls)
        if monitor.observe(shown, now[0]) and result.tripped_at is None:
            result.tripped_at = now[0]
            conn.trafficlight.setProgram(tls, "off")
        if inter is not None:
            inter.envelope.check()
        halting = conn.edge.getAllSubscriptionResults()
        q = max(sum(halting[e][tc.LAST_STEP_VEHICLE_HALTING_NUMBER] for e in es) for es in edges.values())
        result.max_queue = max(result.max_queue, q)
        if now[0] % SERIES_S < 1.0:
            result.series.append((now[0], int(q), len(monitor.violations)))
            if on_step is not None:
                on_step(now[0], result)
    result.sim_s = conn.simulation.getTime()
    result.final_state = conn.trafficlight.getRedYellowGreenState(tls)
    if inter is not None:
        result.flashed = inter.envelope.latched
        result.flashed_at = inter.envelope.flashed_at if inter.envelope.latched else None
        result.refusals = dict(inter.envelope.refusals)
        result.detector_faults = dict(inter.board.failed)


def _trip_stats(path: Path, result: RunResult) -> None:
    root = ET.parse(path).getroot()  # noqa: S314 - written by SUMO in this run
    trips = list(root.iter("tripinfo"))
    result.vehicles = len(trips)
    result.arrivals = sorted(float(t.get("arrival", "-1")) for t in trips if float(t.get("arrival", "-1")) >= 0)
    if trips:
        result.mean_delay_s = sum(float(t.get("timeLoss", "0")) for t in trips) / len(trips)
        result.mean_depart_delay_s = sum(float(t.get("departDelay", "0")) for t in trips) / len(trips)
        result.stops = sum(float(t.get("waitingCount", "0")) for t in trips) / len(trips)
        result.arrived = sum(1 for t in trips if float(t.get("arrival", "-1")) >= 0)
    walks = [w for p in root.iter("personinfo") for w in p.iter("walk")]
    if walks:
        result.ped_delay_s = sum(float(w.get("timeLoss", "0")) for w in walks) / len(walks)


def main() -> None:
    """Command line: one run, figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", default="adaptive", choices=[*AGENT_MODES, *SUMO_PROGRAMS])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--inject-conflict-at", type=float, default=None)
    a = ap.parse_args()
    r = run(a.mode, a.seed, a.scale, a.duration, a.inject_conflict_at)
    d = asdict(r)
    d["violations"] = [asdict(v) for v in r.violations[:10]]
    print(json.dumps(d, indent=1))
    if a.inject_conflict_at is None and (r.violations or r.flashed):
        raise HilFailure(f"{len(r.violations)} violations, envelope latched: {r.flashed}")


if __name__ == "__main__":
    main()
