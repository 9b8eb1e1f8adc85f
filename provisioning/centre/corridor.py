"""``edge-agent centre coordinate``: a corridor's next coordination plan from the counts its
junctions reported, one signed ``coordinate`` command per junction.

The corridor file names its junctions west to east (site, intersection, the site config it runs,
position along the arterial), the coordinated stage, the signal groups that count the arterial's
eastbound and westbound arrivals, the progression speed and the counting window. The counts are
the junctions' ``detector.<loop>.count`` readings (:mod:`control.traffic.counts`) as the receiver
stored them; the plan is :func:`control.traffic.coordplan.next_plan`'s (the one the SUMO rig
uses), moved from the last plan sent (kept in a state file beside the corridor file) or, the
first time, from the junctions' configured coordination plans.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from control.traffic import coordplan
from control.traffic.config import NAME, IntersectionConfig
from control.traffic.counts import POINT_PREFIX, POINT_SUFFIX, loop_of
from kernel.config_base import StrictModel, load_yaml, validation_problems
from kernel.errors import AgentError, ConfigError
from sync.wire import SITE_PATTERN


class JunctionEntry(StrictModel):
    """One junction of the corridor, west to east."""

    site: str = Field(pattern=SITE_PATTERN)
    intersection: str = Field(pattern=NAME)
    config: Path = Field(description="The site config the junction runs (relative to the corridor file).")
    position_m: float = Field(ge=0, le=100_000)


class CorridorFile(StrictModel):
    """A coordinated corridor: its junctions, coordinated stage, arterial groups and plan bounds."""

    name: str
    stage: str = Field(description="The coordinated (arterial) stage, the same name at every junction.")
    eastbound: str = Field(description="The signal group counting eastbound arterial arrivals at a junction.")
    westbound: str = Field(description="The signal group counting westbound arterial arrivals at a junction.")
    speed_mps: float = Field(default=12.5, gt=0, le=30)
    window_min: float = Field(default=15.0, gt=0, le=240, description="Counts of the last this many minutes.")
    cycle_min_s: float = Field(default=70.0, ge=20, le=240)
    cycle_max_s: float = Field(default=130.0, ge=20, le=240)
    junctions: list[JunctionEntry] = Field(min_length=2)


@dataclass(frozen=True)
class Corridor:
    """A validated corridor file with each junction's intersection config."""

    file: CorridorFile
    junctions: tuple[IntersectionConfig, ...]
    source: Path

    @property
    def spec(self) -> coordplan.CorridorSpec:
        """The plan's fixed parts."""
        f = self.file
        positions = tuple(j.position_m for j in f.junctions)
        return coordplan.CorridorSpec(positions, f.speed_mps, f.cycle_min_s, f.cycle_max_s)


def load_corridor(path: Path) -> Corridor:
    """Read and check a corridor file and the site configs it names; :class:`ConfigError` lists
    every problem, one a line."""
    from agent.config import load_config

    try:
        f = CorridorFile.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise ConfigError(str(path), validation_problems(exc)) from exc
    problems: list[str] = []
    if f.cycle_min_s > f.cycle_max_s:
        problems.append(f"cycle_min_s: {f.cycle_min_s:g} is above cycle_max_s {f.cycle_max_s:g}")
    positions = [j.position_m for j in f.junctions]
    if any(b <= a for a, b in itertools.pairwise(positions)):
        problems.append("junctions: positions must increase west to east")
    pairs = [(j.site, j.intersection) for j in f.junctions]
    if len(set(pairs)) != len(pairs):
        problems.append("junctions: a junction is named twice")
    found: list[IntersectionConfig] = []
    for i, j in enumerate(f.junctions):
        where = f"junctions[{i}]"
        cfg_path = j.config if j.config.is_absolute() else path.parent / j.config
        try:
            site = load_config(cfg_path)
        except ConfigError as exc:
            problems.extend(f"{where}.config: {cfg_path.name}: {p}" for p in exc.problems)
            continue
        except OSError as exc:
            problems.append(f"{where}.config: cannot read {cfg_path.name}: {exc.strerror}")
            continue
        if site.site.id != j.site:
            problems.append(f"{where}.site: {j.site!r} but {cfg_path.name} is site {site.site.id!r}")
        ixs = {x.name: x for x in (site.traffic.intersections if site.traffic else [])}
        ix = ixs.get(j.intersection)
        if ix is None:
            problems.append(f"{where}.intersection: {j.intersection!r} is not in {cfg_path.name}")
            continue
        groups = {g.name for g in ix.groups}
        if ix.coordination is None:
            problems.append(f"{where}.intersection: {ix.name} has no coordination section")
        elif ix.coordination.stage != f.stage:
            problems.append(
                f"{where}.intersection: {ix.name} coordinates {ix.coordination.stage!r}, not {f.stage!r}"
            )
        for key, group in (("eastbound", f.eastbound), ("westbound", f.westbound)):
            if group not in groups:
                problems.append(f"{key}: {group!r} is not a signal group of {ix.name} ({where})")
        if not any(d.kind == "loop" for d in ix.detectors):
            problems.append(f"{where}.intersection: {ix.name} has no loop detectors to count with")
        found.append(ix)
    if not problems:
        cycles = {
            next(p for p in ix.plans if p.name == ix.coordination.plan).cycle_s
            for ix in found
            if ix.coordination
        }
        if len(cycles) > 1:
            problems.append(
                f"junctions: their coordination plans differ in cycle ({sorted(cycles)}): one common cycle"
            )
    if problems:
        raise ConfigError(str(path), problems)
    return Corridor(f, tuple(found), path)


def configured_plan(c: Corridor) -> coordplan.CorridorPlan:
    """The plan the junctions run from their configs: each coordinated stage's start as its offset."""
    starts, splits, cycle = [], [], 0.0
    for ix in c.junctions:
        assert ix.coordination is not None
        plan = next(p for p in ix.plans if p.name == ix.coordination.plan)
        names = [s.name for s in ix.stages]
        before = sum(plan.splits[n] for n in names[: names.index(ix.coordination.stage)])
        cycle = plan.cycle_s
        starts.append((plan.offset_s + before) % cycle)
        splits.append(dict(plan.splits))
    first = starts[0]  # the common cycle starts with the westernmost junction's coordinated stage
    return coordplan.CorridorPlan(cycle, first, tuple((s - first) % cycle for s in starts), tuple(splits))


def state_path(corridor_file: Path) -> Path:
    """Where the last plan sent for a corridor is kept."""
    return corridor_file.with_name(corridor_file.stem + ".plan.json")


def load_state(path: Path) -> coordplan.CorridorPlan | None:
    """The last plan sent, or None when there is none (or it is unreadable: start over)."""
    try:
        doc = json.loads(path.read_text())
        return coordplan.CorridorPlan(
            float(doc["cycle_s"]),
            float(doc["anchor_s"]),
            tuple(float(x) for x in doc["offsets_s"]),
            tuple({str(k): float(v) for k, v in s.items()} for s in doc["splits"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_state(path: Path, plan: coordplan.CorridorPlan) -> None:
    """Keep the plan sent (written whole, then renamed)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(plan), indent=1))
    tmp.replace(path)


@dataclass(frozen=True)
class Counts:
    """One junction's loop counts over the window and the hours they cover."""

    loops: dict[str, float]
    hours: float


def read_counts(db: Any, c: Corridor, since: float) -> list[Counts]:
    """Each junction's ``detector.<loop>.count`` readings stored since ``since`` (wall time)."""
    sites = sorted({j.site for j in c.file.junctions})  # SITE_PATTERN: no quote reaches the SQL
    in_list = ", ".join(f"'{s}'" for s in sites)
    # fetch takes no parameters: the site ids match SITE_PATTERN and ``since`` is a float
    sql = (
        "SELECT site_id, device, point, value, ts FROM readings "  # noqa: S608
        f"WHERE site_id IN ({in_list}) AND ts >= {float(since)!r} "
        f"AND point LIKE '{POINT_PREFIX}%{POINT_SUFFIX}'"
    )
    rows = db.fetch(sql)
    out = []
    for j, ix in zip(c.file.junctions, c.junctions, strict=True):
        loops: dict[str, float] = {}
        periods: set[float] = set()
        for site, device, point, value, ts in rows:
            loop = loop_of(point)
            if site == j.site and device == ix.name and loop is not None and value is not None:
                loops[loop] = loops.get(loop, 0.0) + float(value)
                periods.add(round(float(ts), 3))
        out.append(Counts(loops, len(periods) * ix.counts_s / 3600.0))
    return out


def next_corridor_plan(
    c: Corridor, counts: list[Counts], previous: coordplan.CorridorPlan, effective_s: float
) -> coordplan.CorridorPlan:
    """The next plan from the counts (as the rig computes it), from ``effective_s`` on."""
    missing = [
        f"{j.site}/{j.intersection}" for j, n in zip(c.file.junctions, counts, strict=True) if n.hours <= 0
    ]
    if missing:
        raise AgentError(f"no loop counts in the window from {', '.join(missing)}: plan not changed")
    groups = [coordplan.group_counts(ix, n.loops) for ix, n in zip(c.junctions, counts, strict=True)]
    demands = [
        coordplan.junction_demands(ix, g, n.hours)
        for ix, g, n in zip(c.junctions, groups, counts, strict=True)
    ]
    flows = [{k: v / n.hours for k, v in g.items()} for g, n in zip(groups, counts, strict=True)]
    east, west = coordplan.arterial_flows(flows, c.file.eastbound, c.file.westbound)
    return coordplan.next_plan(c.spec, demands, c.file.stage, east, west, previous, effective_s)


def command_bodies(
    c: Corridor, plan: coordplan.CorridorPlan, valid_for_s: float = 0.0
) -> list[tuple[str, dict[str, Any]]]:
    """Each junction's site and its ``coordinate`` command body; with ``valid_for_s`` > 0 the plan
    runs out that long after it starts (``until_s``: the junction then returns to its configured
    plan, and does not take it up again after a restart)."""
    until = {"until_s": plan.anchor_s + valid_for_s} if valid_for_s > 0 else {}
    return [
        (
            j.site,
            {
                "action": "coordinate",
                "intersection": j.intersection,
                "cycle_s": plan.cycle_s,
                "start_s": plan.start_s(k),
                "from_s": plan.anchor_s,
                "splits": plan.splits[k],
                **until,
            },
        )
        for k, j in enumerate(c.file.junctions)
    ]


def describe(c: Corridor, plan: coordplan.CorridorPlan, counts: list[Counts]) -> list[str]:
    """The plan, one line per junction, for the operator."""
    lines = [f"{c.file.name}: cycle {plan.cycle_s:g} s from {plan.anchor_s:.0f}"]
    for k, (j, n) in enumerate(zip(c.file.junctions, counts, strict=True)):
        vph = sum(n.loops.values()) / n.hours if n.hours > 0 else math.nan
        sp = " ".join(f"{s}={v:g}" for s, v in plan.splits[k].items())
        lines.append(
            f"  {j.site}/{j.intersection}: start {plan.start_s(k):g} s, offset {plan.offsets_s[k]:g} s, "
            f"splits {sp} ({vph:.0f} veh/h counted over {n.hours * 60:.0f} min)"
        )
    return lines
