"""A corridor's coordination plan adapted from counts: a common cycle (Webster), splits and offsets.

Every junction of a corridor that is given the same counts computes the same plan (the function is
deterministic), so the plan can be computed once and distributed or computed at each junction from
counts they all receive. The plan changes gradually: the cycle by at most ``cycle_step_s`` and each
offset by at most ``offset_step_s`` per update, and it is re-anchored on a common cycle start of the
old plan, so a junction switching at its coordinated stage's start moves by no more than a step
(its minimum greens, clearances and walks are the controller's and are never cut).

Cycle: Webster's ``C = (1.5 L + 5) / (1 - Y)`` from the critical flow ratios ``y`` of the stages
(flow per lane over the saturation flow), bounded. Splits: each stage its minimum (minimum green or
walk and clearance, plus the change) and the rest of the green shared in proportion to ``y``.
Offsets: between neighbours the one that lets the most of both directions' arterial platoons
through on green, each direction weighted by its measured flow (a two-direction progression: the
eastbound platoon arrives ``distance / speed`` after its upstream start, the westbound one as much
before).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from control.traffic.config import IntersectionConfig, stage_min_green

SATURATION_VPH_PER_LANE = 1800.0
MAX_FLOW_RATIO = 0.85  # above it Webster's cycle explodes: the bound takes over


@dataclass(frozen=True)
class StageDemand:
    """A stage's input to the plan: its critical flow ratio and the shortest split it may get."""

    name: str
    flow_ratio: float  # critical lane flow / saturation flow
    min_split_s: float  # minimum green (or walk + clearance) plus yellow and red clearance
    lost_s: float  # lost time per cycle when it runs (its change interval)


@dataclass(frozen=True)
class CorridorSpec:
    """The fixed parts of a corridor plan: where the junctions are and the plan's bounds."""

    positions_m: tuple[float, ...]  # along the arterial, west to east
    speed_mps: float = 12.5
    cycle_min_s: float = 70.0
    cycle_max_s: float = 130.0
    cycle_step_s: float = 5.0
    offset_step_s: float = 10.0
    # A pair keeps its previous offset unless another gets this share more of the weighted platoons
    # through on green: with the two directions' counts close, the best offset would flip each update.
    offset_hysteresis: float = 0.1


@dataclass(frozen=True)
class CorridorPlan:
    """One plan for all junctions: the common cycle, each junction's coordinated-stage start on the
    time base (``anchor_s`` + its offset), and each junction's splits."""

    cycle_s: float
    anchor_s: float  # a common cycle start on the time base
    offsets_s: tuple[float, ...]  # each junction's coordinated-stage start after the anchor
    splits: tuple[dict[str, float], ...] = field(default_factory=tuple)

    def start_s(self, j: int) -> float:
        """Junction ``j``'s coordinated-stage start on the time base, modulo the cycle."""
        return (self.anchor_s + self.offsets_s[j]) % self.cycle_s


def webster_cycle(stages: Sequence[StageDemand], spec: CorridorSpec) -> float:
    """Webster's optimum cycle from the critical flow ratios, within the spec's bounds."""
    lost = sum(s.lost_s for s in stages)
    y = min(MAX_FLOW_RATIO, sum(s.flow_ratio for s in stages))
    c = (1.5 * lost + 5.0) / (1.0 - y)
    floor = max(spec.cycle_min_s, sum(s.min_split_s for s in stages))
    return float(min(spec.cycle_max_s, max(floor, round(c))))


def splits(stages: Sequence[StageDemand], cycle_s: float) -> dict[str, float]:
    """Each stage its minimum split, the rest of the cycle shared in proportion to its flow ratio
    (equally without counts); whole seconds summing to the cycle."""
    spare = cycle_s - sum(s.min_split_s for s in stages)
    total_y = sum(s.flow_ratio for s in stages)
    out: dict[str, float] = {}
    for s in stages:
        share = s.flow_ratio / total_y if total_y > 0 else 1.0 / len(stages)
        out[s.name] = float(math.floor(s.min_split_s + max(0.0, spare) * share))
    first = max(stages, key=lambda s: s.flow_ratio).name
    out[first] += cycle_s - sum(out.values())
    return out


def pair_offset(
    distance_m: float,
    speed_mps: float,
    green_s: float,
    cycle_s: float,
    w_east: float,
    w_west: float,
    keep: float | None = None,
    hysteresis: float = 0.0,
) -> float:
    """The downstream (eastern) junction's offset after its western neighbour that gets the most of
    both platoons through on green, weighted by direction (whole seconds; the nearest to the
    eastbound ideal on a tie). ``keep`` (the current offset) stays unless the best gets more than
    ``hysteresis`` (a share) more through."""
    travel = distance_m / speed_mps

    def arrives_on_green(lag: float, o: float) -> float:
        d = abs((o - lag + cycle_s / 2) % cycle_s - cycle_s / 2)
        return max(0.0, green_s - d) / green_s if green_s > 0 else 0.0

    best, best_v = travel % cycle_s, -1.0
    for k in range(int(cycle_s)):
        o = float(k)
        v = w_east * arrives_on_green(travel, o) + w_west * arrives_on_green(-travel, o)
        d_east = abs((o - travel + cycle_s / 2) % cycle_s - cycle_s / 2)
        d_best = abs((best - travel + cycle_s / 2) % cycle_s - cycle_s / 2)
        if v > best_v + 1e-9 or (abs(v - best_v) <= 1e-9 and d_east < d_best):
            best, best_v = o, v
    if keep is not None:
        kept = float(round(keep) % int(cycle_s))
        v_keep = w_east * arrives_on_green(travel, kept) + w_west * arrives_on_green(-travel, kept)
        if v_keep >= best_v * (1.0 - hysteresis) - 1e-9:
            return kept
    return best


def _toward(old: float, new: float, step: float, cycle_s: float) -> float:
    """``new`` reached from ``old`` by at most ``step`` the short way round the cycle."""
    d = (new - old + cycle_s / 2) % cycle_s - cycle_s / 2
    return (old + max(-step, min(step, d))) % cycle_s


def next_plan(
    spec: CorridorSpec,
    stages: Sequence[Sequence[StageDemand]],
    coordinated: str,
    flows_east: Sequence[float],
    flows_west: Sequence[float],
    previous: CorridorPlan,
    effective_s: float,
) -> CorridorPlan:
    """The plan from ``effective_s`` on (a time base value): cycle and offsets moved toward the
    counts' optimum by at most a step, anchored on the previous plan's first common cycle start at or
    after ``effective_s``. ``stages[j]`` are junction j's stage demands; ``flows_east[k]`` and
    ``flows_west[k]`` the arterial flows between junctions k and k+1 (veh/h). Each pair keeps its
    previous relative offset unless another is better by more than ``spec.offset_hysteresis``."""
    want = max(webster_cycle(js, spec) for js in stages)
    step = max(-spec.cycle_step_s, min(spec.cycle_step_s, want - previous.cycle_s))
    cycle = previous.cycle_s + step
    plan_splits = tuple(splits(js, cycle) for js in stages)
    offsets = [0.0]
    for k in range(len(spec.positions_m) - 1):
        green = plan_splits[k + 1][coordinated] - next(
            s.lost_s for s in stages[k + 1] if s.name == coordinated
        )
        dist = spec.positions_m[k + 1] - spec.positions_m[k]
        was = (previous.offsets_s[k + 1] - previous.offsets_s[k]) % previous.cycle_s
        rel = pair_offset(
            dist, spec.speed_mps, green, cycle, flows_east[k], flows_west[k], was, spec.offset_hysteresis
        )
        offsets.append((offsets[-1] + rel) % cycle)
    moved = tuple(
        _toward(old, new, spec.offset_step_s, cycle)
        for old, new in zip(previous.offsets_s, offsets, strict=True)
    )
    anchor = (
        previous.anchor_s + math.ceil((effective_s - previous.anchor_s) / previous.cycle_s) * previous.cycle_s
    )
    return CorridorPlan(cycle, anchor, moved, plan_splits)


def stage_demands(
    stage_groups: Mapping[str, Sequence[str]],
    lanes: Mapping[str, int],
    counts: Mapping[str, float],
    hours: float,
    min_split_s: Mapping[str, float],
    lost_s: float,
) -> list[StageDemand]:
    """Stage demands from counted vehicles per signal group over ``hours``: a stage's flow ratio
    is its busiest group's flow per lane over the saturation flow."""
    out = []
    for name, groups in stage_groups.items():
        y = max(
            (counts.get(g, 0.0) / max(1, lanes.get(g, 1)) / hours / SATURATION_VPH_PER_LANE for g in groups),
            default=0.0,
        )
        out.append(StageDemand(name, y, min_split_s[name], lost_s))
    return out


def junction_demands(
    ix: IntersectionConfig, group_counts: Mapping[str, float], hours: float
) -> list[StageDemand]:
    """A junction's stage demands from its loops' vehicles per signal group over ``hours``: lanes
    are its loops per group, a stage's minimum split its minimum green (or walk and clearance) plus
    the change interval."""
    kinds = {g.name: g.kind for g in ix.groups}
    lanes: dict[str, int] = {}
    for d in ix.detectors:
        if d.kind == "loop":
            lanes[d.group] = lanes.get(d.group, 0) + 1
    change = ix.limits.yellow + ix.limits.red_clearance_s
    return stage_demands(
        {st.name: [g for g in st.green if kinds[g] == "vehicle"] for st in ix.stages},
        lanes,
        group_counts,
        hours,
        {st.name: stage_min_green(ix, st) + change for st in ix.stages},
        change,
    )


def group_counts(ix: IntersectionConfig, loop_counts: Mapping[str, float]) -> dict[str, float]:
    """Vehicles per signal group from vehicles per loop detector (loops of other junctions ignored)."""
    groups = {d.name: d.group for d in ix.detectors if d.kind == "loop"}
    out: dict[str, float] = {}
    for loop, n in loop_counts.items():
        if loop in groups:
            out[groups[loop]] = out.get(groups[loop], 0.0) + n
    return out


def arterial_flows(
    counts: Sequence[Mapping[str, float]], eastbound: str, westbound: str
) -> tuple[list[float], list[float]]:
    """The arterial flows between neighbours from each junction's group counts: eastbound between
    k and k+1 as counted arriving at k+1 (group ``eastbound``), westbound as counted arriving at k."""
    east = [counts[k + 1].get(eastbound, 0.0) for k in range(len(counts) - 1)]
    west = [counts[k].get(westbound, 0.0) for k in range(len(counts) - 1)]
    return east, west
