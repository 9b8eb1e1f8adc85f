"""A coordinated corridor: three signalised junctions 300 m apart on an east-west arterial, in SUMO.

Each junction has the single-junction rig's geometry (:mod:`hil.sumo.scenario`: three-lane
approaches with a left bay, sidewalks, four signalised crosswalks, E1 loops and E2 zones), its own
copy of the agent's controller, envelope and driver (:class:`~control.traffic.runner.Intersection`)
and its own independent :class:`~hil.sumo.monitor.LinkMonitor`. Between two junctions the arterial
is a 150 m link out of one and a 150 m approach into the next.

Demand, one hour in 15-minute slots: the arterial eastbound (the peak direction) and westbound
from the corridor's ends, 70 % through the whole corridor and 5 % turning right and 5 % left at
each junction; at each junction a north and a south side street (15 % right, 70 % through, 15 %
left, as in the single rig), turning traffic travelling on to the corridor's end; 360 pedestrians an
hour at each junction between its four arms; the same vehicle mix.

The common plan (cycle 100 s; splits by volume, the arterial's through stage 52 s) and the offsets
are a traffic engineer's one-way progression for the peak direction: each junction's arterial green
starts distance / progression speed (300 m / 12.5 m/s = 24 s) after its western neighbour's.

Mode ``adaptive_counts`` starts from that plan and adapts the cycle, splits and offsets from the
junctions' loop counts every ``PLAN_UPDATE_S`` (:class:`CountsPlanner`, :mod:`control.traffic.coordplan`).

``python -m hil.sumo.corridor --mode adaptive --seed 1 --scale 1.4`` prints one run's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from control.traffic import coordplan
from control.traffic.config import IntersectionConfig
from control.traffic.runner import Intersection
from drivers.signals.sumo import SumoSignals
from hil.sumo import plan as planmod
from hil.sumo.monitor import LinkMonitor, Violation, link_monitor
from hil.sumo.rig import start_sumo, sumo_programs
from hil.sumo.scenario import ARMS, SLOT_S, TURN_SHARE, TURNS, detector_rows, write_rig
from kernel.errors import HilFailure
from kernel.readings import Reading

JUNCTIONS = ("j0", "j1", "j2")
SPACING_M = 300.0
PROGRESSION_MPS = 12.5  # 45 km/h: 90 % of the 50 km/h limit, the usual design speed of a band
ARTERIAL_VPH = {"eb": (500, 900, 900, 600), "wb": (400, 700, 700, 500)}
SIDE_VPH = (200, 300, 300, 250)  # each side street (north and south) of each junction
ARTERIAL_TURN = 0.05  # of the arterial flow, right and left at each junction
PEDS_PER_HOUR = 360  # at each junction
COORDINATED_STAGE = "ew_through"
CYCLE_S = 100.0
SPLITS = {"ns_through": 24.0, "ns_left": 12.0, "ew_through": 52.0, "ew_left": 12.0}
ARTERIAL_MAX_GREEN_S = 80.0

AGENT_MODES = ("fixed", "actuated", "adaptive", "adaptive_counts", "adaptive_free")
PLAN_UPDATE_S = 300.0  # adaptive_counts: a new corridor plan from the last period's counts
SUMO_PROGRAMS = {
    "sumo_static": "static",  # common cycle, offsets for the progression
    "sumo_actuated": "actuated",  # fair, uncoordinated
    "sumo_actuated_coord": "actuated_coord",  # fair, SUMO's coordinated actuated
    "sumo_delay": "delay_based",  # fair, uncoordinated
}
BUILD_DIR = Path(tempfile.gettempdir()) / "kbe-sumo-corridor"
SERIES_S = 10.0


def _x(j: str) -> float:
    return JUNCTIONS.index(j) * SPACING_M


def _arm(edge_id: str) -> str:
    return edge_id.split("_")[1]


def _outer(j: str, a: str) -> bool:
    """Whether arm ``a`` of ``j`` leads out of the corridor (not to a neighbouring junction)."""
    i = JUNCTIONS.index(j)
    return not ((a == "e" and i < len(JUNCTIONS) - 1) or (a == "w" and i > 0))


def _neighbour(j: str, a: str) -> str:
    i = JUNCTIONS.index(j)
    return JUNCTIONS[i + 1] if a == "e" else JUNCTIONS[i - 1]


def _mid(j: str, a: str) -> str:
    i = JUNCTIONS.index(j)
    k = i if a == "e" else i - 1
    return f"m{k}{k + 1}"


def _nodes() -> str:
    rows = []
    for j in JUNCTIONS:
        x = _x(j)
        rows.append(f'<node id="{j}" x="{x}" y="0" type="traffic_light" tl="{j}"/>')
        for a, (dx, dy) in ARMS.items():
            if _outer(j, a):
                rows.append(f'<node id="{j}_{a}1" x="{x + dx * 80}" y="{dy * 80}" type="priority"/>')
                rows.append(f'<node id="{j}_{a}0" x="{x + dx * 300}" y="{dy * 300}" type="dead_end"/>')
    for k in range(len(JUNCTIONS) - 1):
        rows.append(f'<node id="m{k}{k + 1}" x="{(k + 0.5) * SPACING_M}" y="0" type="priority"/>')
    return "<nodes>\n" + "\n".join(rows) + "\n</nodes>\n"


def _edges() -> str:
    rows = []
    side = 'speed="13.89" sidewalkWidth="2.0"'
    for j in JUNCTIONS:
        for a in ARMS:
            if _outer(j, a):
                rows.append(f'<edge id="{j}_{a}_far" from="{j}_{a}0" to="{j}_{a}1" numLanes="2" {side}/>')
                rows.append(f'<edge id="{j}_{a}_in" from="{j}_{a}1" to="{j}" numLanes="3" {side}/>')
                rows.append(f'<edge id="{j}_{a}_out" from="{j}" to="{j}_{a}1" numLanes="2" {side}/>')
                rows.append(f'<edge id="{j}_{a}_away" from="{j}_{a}1" to="{j}_{a}0" numLanes="2" {side}/>')
            else:
                m = _mid(j, a)
                rows.append(f'<edge id="{j}_{a}_in" from="{m}" to="{j}" numLanes="3" {side}/>')
                rows.append(f'<edge id="{j}_{a}_out" from="{j}" to="{m}" numLanes="2" {side}/>')
    return "<edges>\n" + "\n".join(rows) + "\n</edges>\n"


def _feed(src: str, dst: str) -> list[str]:
    """A two-lane link into a three-lane approach where its left bay opens."""
    return [
        f'<connection from="{src}" to="{dst}" fromLane="1" toLane="1"/>',
        f'<connection from="{src}" to="{dst}" fromLane="2" toLane="2"/>',
        f'<connection from="{src}" to="{dst}" fromLane="2" toLane="3"/>',
    ]


def _connections() -> str:
    rows = []
    for j in JUNCTIONS:
        for a, (right, through, left) in TURNS.items():
            if _outer(j, a):
                rows += _feed(f"{j}_{a}_far", f"{j}_{a}_in")
                rows.append(f'<connection from="{j}_{a}_out" to="{j}_{a}_away" fromLane="1" toLane="1"/>')
                rows.append(f'<connection from="{j}_{a}_out" to="{j}_{a}_away" fromLane="2" toLane="2"/>')
            else:
                rows += _feed(f"{j}_{a}_out", f"{_neighbour(j, a)}_{TURNS[a][1]}_in")
            rows.append(f'<connection from="{j}_{a}_in" to="{j}_{right}_out" fromLane="1" toLane="1"/>')
            rows.append(f'<connection from="{j}_{a}_in" to="{j}_{through}_out" fromLane="1" toLane="1"/>')
            rows.append(f'<connection from="{j}_{a}_in" to="{j}_{through}_out" fromLane="2" toLane="2"/>')
            rows.append(f'<connection from="{j}_{a}_in" to="{j}_{left}_out" fromLane="3" toLane="2"/>')
            rows.append(f'<crossing node="{j}" edges="{j}_{a}_in {j}_{a}_out" priority="false" width="4"/>')
    return "<connections>\n" + "\n".join(rows) + "\n</connections>\n"


def _exit(j: str, arm: str) -> str:
    """The edge where a vehicle leaving junction ``j`` by ``arm`` ends its trip."""
    if arm == "e":
        return f"{JUNCTIONS[-1]}_e_away"
    if arm == "w":
        return f"{JUNCTIONS[0]}_w_away"
    return f"{j}_{arm}_away"


def routes_xml(scale: float = 1.0) -> str:
    """Arterial, side-street and pedestrian flows for one hour (Bernoulli arrivals, SUMO's seed)."""
    out = [
        "<routes>",
        '<vType id="car" vClass="passenger" length="4.5"/>',
        '<vType id="moto" vClass="motorcycle" length="2.0" maxSpeed="13.9"/>',
        '<vType id="bus" vClass="bus" length="10.0"/>',
        '<vTypeDistribution id="mix" vTypes="car moto bus" probabilities="0.65 0.30 0.05"/>',
    ]
    flows: list[tuple[float, str]] = []

    def flow(fid: str, k: int, vph: float, src: str, dst: str) -> None:
        prob = min(1.0, vph * scale / 3600.0)
        flows.append(
            (
                k * SLOT_S,
                f'<flow id="{fid}_{k}" type="mix" begin="{k * SLOT_S}" end="{(k + 1) * SLOT_S}" '
                f'probability="{prob:.5f}" from="{src}" to="{dst}" departLane="best" departSpeed="max"/>',
            )
        )

    for d, slots in ARTERIAL_VPH.items():
        order = JUNCTIONS if d == "eb" else JUNCTIONS[::-1]
        src = f"{order[0]}_{'w' if d == 'eb' else 'e'}_far"
        dst = f"{order[-1]}_{'e' if d == 'eb' else 'w'}_away"
        for k, vph in enumerate(slots):
            flow(f"thru_{d}", k, vph * (1 - 2 * ARTERIAL_TURN * len(JUNCTIONS)), src, dst)
            for j in order:
                for arm in ("n", "s"):
                    flow(f"art_{d}_{j}{arm}", k, vph * ARTERIAL_TURN, src, f"{j}_{arm}_away")
    for j in JUNCTIONS:
        for a in ("n", "s"):
            for k, vph in enumerate(SIDE_VPH):
                for turn, share in zip(TURNS[a], TURN_SHARE, strict=True):
                    flow(f"side_{j}{a}_{turn}", k, vph * share, f"{j}_{a}_far", _exit(j, turn))
    period = 3600.0 * len(ARMS) * 3 / (PEDS_PER_HOUR * scale)
    for j in JUNCTIONS:
        for a in ARMS:
            for b in ARMS:
                if a != b:
                    flows.append(
                        (
                            0,
                            f'<personFlow id="p_{j}{a}{b}" begin="0" end="3600" period="{period:.2f}">'
                            f'<walk from="{j}_{a}_in" to="{j}_{b}_out"/></personFlow>',
                        )
                    )
    flows.sort(key=lambda f: f[0])  # SUMO reads route files incrementally, by departure
    out += [f for _, f in flows]
    out.append("</routes>")
    return "\n".join(out) + "\n"


def detectors_xml(lane_length: dict[str, float], out_dir: Path) -> str:
    """Each junction's E1 loops and E2 zones, named ``<junction>_loop_<arm>_<lane>`` and ``..._zone_..``."""
    rows = [row for j in JUNCTIONS for row in detector_rows(lane_length, out_dir, prefix=f"{j}_")]
    return "\n".join(["<additional>", *rows, "</additional>"]) + "\n"


def build(out_dir: Path, scale: float = 1.0) -> dict[str, Path]:
    """Write the corridor's network, routes and detectors into ``out_dir``; return their paths."""
    plain = {"nod": _nodes(), "edg": _edges(), "con": _connections()}
    return write_rig(out_dir, "corridor", scale, plain, routes_xml(scale), detectors_xml)


def plan_offset(j: str) -> float:
    """The plan offset of junction ``j``: its arterial green starts ``x / v`` into the common cycle
    (the eastbound progression); the plan's cycle starts with its first stage, before that."""
    before = sum(SPLITS[s] for s in ("ns_through", "ns_left"))
    return (_x(j) / PROGRESSION_MPS - before) % CYCLE_S


def junction_config(net: Path, j: str, coordinate: bool = True) -> IntersectionConfig:
    """Junction ``j``'s intersection config: the rig's plan with the corridor's plan and coordination."""
    raw = planmod.intersection(net, tls=j, prefix=f"{j}_", arm_of=_arm)
    for st in raw["stages"]:
        if st["name"] == COORDINATED_STAGE:
            st["max_green_s"] = ARTERIAL_MAX_GREEN_S
    raw["plans"] = [{"name": "corridor", "cycle_s": CYCLE_S, "offset_s": plan_offset(j), "splits": SPLITS}]
    if coordinate:
        raw["coordination"] = {"plan": "corridor", "stage": COORDINATED_STAGE}
    return IntersectionConfig.model_validate(raw)


@dataclass
class CorridorResult:
    """Figures of one simulated corridor run."""

    mode: str
    seed: int
    scale: float
    arterial_delay_s: float = 0.0  # mean timeLoss of vehicles through the whole corridor
    arterial_stops: float = 0.0  # their mean stops (SUMO waitingCount)
    side_delay_s: float = 0.0  # mean timeLoss of side-street vehicles
    mean_delay_s: float = 0.0  # every vehicle
    stops: float = 0.0
    ped_delay_s: float = 0.0
    arrived: int = 0
    vehicles: int = 0
    max_queue: int = 0
    violations: dict[str, list[Violation]] = field(default_factory=dict)
    flashed: dict[str, str | None] = field(default_factory=dict)
    refusals: dict[str, dict[str, int]] = field(default_factory=dict)
    coordinated_s: dict[str, float] = field(default_factory=dict)  # simulated seconds coordinated
    events: dict[str, list[str]] = field(default_factory=dict)  # each junction's coordination events
    tripped_at: dict[str, float | None] = field(default_factory=dict)  # when a monitor tripped
    arrivals: list[float] = field(default_factory=list)  # when each finished trip arrived
    # Every SERIES_S simulated seconds: (time, vehicles halting on the worst approach, findings so far).
    series: list[tuple[float, int, int]] = field(default_factory=list)
    sim_s: float = 0.0
    wall_s: float = 0.0
    plans: list[tuple[float, tuple[float, ...]]] = field(
        default_factory=list
    )  # adaptive_counts: (cycle, offsets)

    @property
    def findings(self) -> int:
        """Monitor findings plus envelope trips over all junctions."""
        return sum(len(v) for v in self.violations.values()) + sum(1 for f in self.flashed.values() if f)


class _Junction:
    """One junction of the run: its controller stack (agent modes) and its independent monitor."""

    def __init__(
        self, conn: Any, net: Path, j: str, mode: str, now: Callable[[], float], synced: Callable[[], bool]
    ) -> None:
        import traci.constants as tc

        self.j, self.conn = j, conn
        self.ix = junction_config(net, j, coordinate=mode != "adaptive_free")
        assert self.ix.output is not None
        assert self.ix.output.driver == "sumo"
        links = self.ix.output.links
        self.monitor: LinkMonitor = link_monitor(net, j, links, list(self.ix.permissive))
        self.inter: Intersection | None = None
        self.reports: list[Reading] = []
        self._switch_at: float | None = None
        if mode == "sumo_actuated_coord":
            # Loaded mid-cycle with an offset, SUMO's coordinated actuated logic stays in its first
            # phase; it takes over from the static program (the same phases) at a cycle start.
            conn.trafficlight.setProgram(j, "static")
            self._switch_at = _sumo_offset(j)
        elif mode in SUMO_PROGRAMS:
            conn.trafficlight.setProgram(j, SUMO_PROGRAMS[mode])
        else:
            peds = [g.name for g in self.ix.groups if g.kind == "pedestrian"]
            agent_mode = "adaptive" if mode in ("adaptive_free", "adaptive_counts") else mode
            self.inter = Intersection(
                self.ix,
                SumoSignals(conn, j, links, peds),
                now,
                self.reports.append,
                mode=agent_mode,  # type: ignore[arg-type]
                time_base=lambda: now() if synced() else None,
            )
            self.inter.start()
        self.loops = [f"{j}_loop_{a}_{lane}" for a in ARMS for lane in (1, 2, 3)]
        self.zones = [f"{j}_zone_{a}_{lane}" for a in ARMS for lane in (1, 2, 3)]
        for d in self.loops:
            conn.inductionloop.subscribe(d, [tc.LAST_STEP_VEHICLE_NUMBER])
        for z in self.zones:
            conn.lanearea.subscribe(
                z, [tc.LAST_STEP_VEHICLE_NUMBER, tc.LAST_STEP_VEHICLE_HALTING_NUMBER, tc.JAM_LENGTH_METERS]
            )
        self.tripped_at: float | None = None

    def tick(self, t: float, loops: dict[str, Any], zones: dict[str, Any]) -> None:
        """Feed the detectors to the junction's controller and tick it (agent modes)."""
        import traci.constants as tc

        if self._switch_at is not None and t > 0 and (t - self._switch_at) % CYCLE_S == 0:
            self.conn.trafficlight.setProgram(self.j, SUMO_PROGRAMS["sumo_actuated_coord"])
            self.conn.trafficlight.setPhase(self.j, 0)
            self._switch_at = None
        if self.inter is None:
            return
        for d in self.loops:
            self.inter.board.loop(d, loops[d][tc.LAST_STEP_VEHICLE_NUMBER] > 0)
        for z in self.zones:
            zr = zones[z]
            self.inter.board.zone(
                z,
                zr[tc.LAST_STEP_VEHICLE_NUMBER],
                zr[tc.LAST_STEP_VEHICLE_HALTING_NUMBER],
                zr[tc.JAM_LENGTH_METERS],
            )
        self.inter.tick()

    def check(self, t: float) -> bool:
        """Monitor and envelope after a step; True while the junction is coordinated."""
        shown = self.conn.trafficlight.getRedYellowGreenState(self.j)
        if self.monitor.observe(shown, t) and self.tripped_at is None:
            self.tripped_at = t
            self.conn.trafficlight.setProgram(self.j, "off")
        if self.inter is None:
            return False
        self.inter.envelope.check()
        return self.inter.controller.coordinated


class CountsPlanner:
    """adaptive_counts: the corridor plan (common cycle, splits, offsets) from each junction's loop
    counts (:mod:`control.traffic.coordplan`), sent to every junction's controller, which takes it
    up at its coordinated stage's next start. In the rig one planner serves the three junctions (as
    the centre would, from the counts they report); it starts from the configured plan."""

    def __init__(self, juncs: list[_Junction], offset_hysteresis: float | None = None) -> None:
        self.juncs = juncs
        self.spec = coordplan.CorridorSpec(tuple(_x(j.j) for j in juncs), PROGRESSION_MPS)
        if offset_hysteresis is not None:
            self.spec = dataclasses.replace(self.spec, offset_hysteresis=offset_hysteresis)
        self.plan = coordplan.CorridorPlan(CYCLE_S, 0.0, tuple(_x(j.j) / PROGRESSION_MPS for j in juncs))
        self._last = [self._group_counts(j) for j in juncs]
        self.history: list[coordplan.CorridorPlan] = [self.plan]

    @staticmethod
    def _group_counts(jn: _Junction) -> dict[str, float]:
        assert jn.inter is not None
        return coordplan.group_counts(jn.ix, jn.inter.board.actuations())

    def update(self, now: float) -> coordplan.CorridorPlan:
        """Counts since the last update -> the next plan, sent to every junction."""
        counts = [self._group_counts(j) for j in self.juncs]
        period = [{g: c[g] - last.get(g, 0.0) for g in c} for c, last in zip(counts, self._last, strict=True)]
        self._last = counts
        hours = PLAN_UPDATE_S / 3600.0
        demands = [coordplan.junction_demands(jn.ix, c, hours) for jn, c in zip(self.juncs, period, strict=True)]
        east, west = coordplan.arterial_flows(period, "w_through", "e_through")
        self.plan = coordplan.next_plan(self.spec, demands, COORDINATED_STAGE, east, west, self.plan, now)
        self.history.append(self.plan)
        for k, jn in enumerate(self.juncs):
            assert jn.inter is not None
            jn.inter.controller.set_coordination(
                self.plan.cycle_s, self.plan.start_s(k), self.plan.splits[k], self.plan.anchor_s
            )
        return self.plan


def _approaches() -> list[list[str]]:
    """Edges holding each approach's queue (an inner approach reaches back to the link before it)."""
    out = []
    for j in JUNCTIONS:
        for a in ARMS:
            if _outer(j, a):
                out.append([f"{j}_{a}_in", f"{j}_{a}_far"])
            else:
                out.append([f"{j}_{a}_in", f"{_neighbour(j, a)}_{TURNS[a][1]}_out"])
    return out


def run(
    mode: str,
    seed: int = 1,
    scale: float = 1.0,
    duration_s: float = 3600.0,
    out_dir: Path | None = None,
    unsync: dict[str, tuple[float, float]] | None = None,
    on_step: Callable[[float, CorridorResult], None] | None = None,
    offset_hysteresis: float | None = None,
) -> CorridorResult:
    """One corridor run; ``unsync`` takes a junction's clock out of synchronisation from one
    simulated time to another: ``{"j1": (1200.0, 2400.0)}``; ``on_step(sim_t, partial)`` is
    called every ``SERIES_S`` simulated seconds (progress); ``offset_hysteresis`` replaces the
    plan's default (adaptive_counts; an A/B)."""
    import traci
    import traci.constants as tc

    out_dir = out_dir or BUILD_DIR
    paths = build(out_dir, scale)
    progs = out_dir / "corridor.tls.xml"
    parts = []
    for j in JUNCTIONS:
        ix = junction_config(paths["net"], j)
        assert ix.output is not None
        assert ix.output.driver == "sumo"
        links = ix.output.links
        n_links = 1 + max(i for ls in links.values() for i in ls)
        text = sumo_programs(ix, n_links, links, j, f"{j}_", _sumo_offset(j), COORDINATED_STAGE)
        parts.append(text.removeprefix("<additional>\n").removesuffix("</additional>\n"))
    progs.write_text("<additional>\n" + "".join(parts) + "</additional>\n")
    tripinfo = out_dir / f"trip.{mode}.{seed}.{scale:g}.xml"
    conn = start_sumo(traci, paths, progs, seed, duration_s, tripinfo, f"corridor-{mode}-{seed}-{scale}")
    wall0 = time.monotonic()
    now = [float(conn.simulation.getTime())]
    unsync = unsync or {}

    def synced(j: str) -> Callable[[], bool]:
        lo, hi = unsync.get(j, (float("inf"), float("inf")))
        return lambda: not lo <= now[0] < hi

    result = CorridorResult(mode, seed, scale)
    try:
        juncs = [_Junction(conn, paths["net"], j, mode, lambda: now[0], synced(j)) for j in JUNCTIONS]
        planner = CountsPlanner(juncs, offset_hysteresis) if mode == "adaptive_counts" else None
        approaches = _approaches()
        for e in {e for es in approaches for e in es}:
            conn.edge.subscribe(e, [tc.LAST_STEP_VEHICLE_HALTING_NUMBER])
        result.coordinated_s = dict.fromkeys(JUNCTIONS, 0.0)
        conn.simulationStep()
        now[0] = float(conn.simulation.getTime())
        while now[0] < duration_s:
            loops = conn.inductionloop.getAllSubscriptionResults()
            zones = conn.lanearea.getAllSubscriptionResults()
            for jn in juncs:
                jn.tick(now[0], loops, zones)
            conn.simulationStep()
            now[0] += 1.0
            if planner is not None and now[0] % PLAN_UPDATE_S == 0:
                planner.update(now[0])
            for jn in juncs:
                if jn.check(now[0]):
                    result.coordinated_s[jn.j] += 1.0
            halting = conn.edge.getAllSubscriptionResults()
            q = max(sum(halting[e][tc.LAST_STEP_VEHICLE_HALTING_NUMBER] for e in es) for es in approaches)
            result.max_queue = max(result.max_queue, q)
            if now[0] % SERIES_S < 1.0:
                found = sum(len(jn.monitor.violations) for jn in juncs)
                result.series.append((now[0], int(q), found))
                if on_step is not None:
                    result.violations = {jn.j: jn.monitor.violations for jn in juncs}
                    on_step(now[0], result)
        result.sim_s = conn.simulation.getTime()
        if planner is not None:
            result.plans = [(p.cycle_s, p.offsets_s) for p in planner.history]
        for jn in juncs:
            result.violations[jn.j] = jn.monitor.violations
            result.tripped_at[jn.j] = jn.tripped_at
            result.events[jn.j] = [str(r.value) for r in jn.reports if r.point == "coordination"]
            if jn.inter is not None:
                result.flashed[jn.j] = jn.inter.envelope.latched
                result.refusals[jn.j] = dict(jn.inter.envelope.refusals)
    finally:
        conn.close()
    result.wall_s = time.monotonic() - wall0
    _trip_stats(tripinfo, result)
    return result


def _sumo_offset(j: str) -> float:
    """SUMO's ``offset``: its time in cycle is ``(time - offset) % cycleTime``, so the program's
    first phase starts at ``offset`` as the plan's first stage does."""
    return plan_offset(j)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _trip_stats(path: Path, r: CorridorResult) -> None:
    root = ET.parse(path).getroot()  # noqa: S314 - written by SUMO in this run
    trips = list(root.iter("tripinfo"))
    loss = {t.get("id", ""): float(t.get("timeLoss", "0")) for t in trips}
    waits = {t.get("id", ""): float(t.get("waitingCount", "0")) for t in trips}
    through = [i for i in loss if i.startswith("thru_")]
    side = [i for i in loss if i.startswith("side_")]
    r.vehicles = len(trips)
    r.arrivals = sorted(float(t.get("arrival", "-1")) for t in trips if float(t.get("arrival", "-1")) >= 0)
    r.arrived = len(r.arrivals)
    r.mean_delay_s = _mean(list(loss.values()))
    r.stops = _mean(list(waits.values()))
    r.arterial_delay_s = _mean([loss[i] for i in through])
    r.arterial_stops = _mean([waits[i] for i in through])
    r.side_delay_s = _mean([loss[i] for i in side])
    walks = [float(w.get("timeLoss", "0")) for p in root.iter("personinfo") for w in p.iter("walk")]
    r.ped_delay_s = _mean(walks)


def main() -> None:
    """Command line: one corridor run, figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", default="adaptive", choices=[*AGENT_MODES, *SUMO_PROGRAMS])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=3600.0)
    a = ap.parse_args()
    r = run(a.mode, a.seed, a.scale, a.duration)
    d = asdict(r)
    d["violations"] = {j: [asdict(v) for v in vs[:5]] for j, vs in r.violations.items()}
    print(json.dumps(d, indent=1))
    if r.findings:
        raise HilFailure(f"{r.findings} monitor findings or envelope trips")


if __name__ == "__main__":
    main()
