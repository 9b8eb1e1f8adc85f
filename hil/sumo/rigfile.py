"""The SUMO traffic rig as a rig file, run by ``edge-agent hil run`` like every other rig.

A rig file with ``kind: sumo`` runs :func:`hil.sumo.rig.run` (the field controller and safety
envelope driving SUMO's junction) or, with ``scenario: corridor``, :func:`hil.sumo.corridor.run`
(three coordinated junctions, each with its own controller, envelope and monitor), and turns what the independent link monitor found into
expectations, one per monitor rule, plus the envelope's own verdict and the traffic figures. The
verdict, report text, JUnit XML and HTML figures have the same shape as an agent rig's.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, model_validator

from hil.expect import Check, DeviceStats, Verdict
from hil.figures import bucket_s, check_rows
from hil.schedule import FaultWindow
from kernel.config_base import StrictModel, validation_problems
from kernel.errors import ConfigError
from kernel.progress import Snapshot

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
MONITOR_RULES = (
    "conflict",
    "min_green",
    "no_yellow",
    "short_yellow",
    "long_yellow",
    "yellow_to_green",
    "red_clearance",
)
CATCH_S = 2.0  # a forced conflict must be caught and the light flashing within this


class ForcedConflict(StrictModel):
    """Conflicting greens forced onto the junction below the envelope at ``at_s`` (a crossed wire)."""

    kind: Literal["forced_conflict"]
    at_s: float = Field(ge=0)


class ClockUnsync(StrictModel):
    """A corridor junction's clock loses synchronisation from ``from_s`` to ``to_s`` (simulated)."""

    kind: Literal["clock_unsync"]
    junction: str
    from_s: float = Field(ge=0)
    to_s: float = Field(gt=0)


SumoFault = Annotated[Union[ForcedConflict, ClockUnsync], Field(discriminator="kind")]
CORRIDOR_ONLY = ("adaptive_counts", "adaptive_free", "sumo_actuated_coord")


class SumoExpect(StrictModel):
    """What must hold: the monitor's rules, the envelope's verdict, the traffic figures."""

    monitor: bool = Field(default=True, description="No finding of the independent link monitor.")
    envelope: bool = Field(default=True, description="The envelope never latched to flash nor refused.")
    max_mean_delay_s: float | None = Field(default=None, gt=0, description="Mean time lost per vehicle.")
    min_vehicles: int | None = Field(default=None, ge=0, description="Trips through the junction, at least.")
    coordinated: bool = Field(
        default=True,
        description="Corridor, agent modes: every junction coordinated whenever its clock is synchronised.",
    )


class SumoRig(StrictModel):
    """A traffic rig: the junction of ``hil/sumo/scenario.py`` under one controller mode."""

    version: Literal[1] = 1
    kind: Literal["sumo"]
    rig: str = Field(pattern=NAME)
    description: str = ""
    duration_s: float = Field(gt=0, le=86400, description="Simulated seconds.")
    scenario: Literal["junction", "corridor"] = "junction"
    mode: Literal[
        "fixed",
        "actuated",
        "adaptive",
        "adaptive_counts",
        "adaptive_free",
        "sumo_static",
        "sumo_actuated",
        "sumo_actuated_coord",
        "sumo_delay",
    ] = "adaptive"
    seed: int = 1
    scale: float = Field(default=1.0, gt=0, le=5, description="Demand multiplier.")
    faults: list[SumoFault] = Field(default_factory=list, max_length=3)
    expect: SumoExpect = SumoExpect()

    @model_validator(mode="after")
    def _inside(self) -> SumoRig:
        from hil.sumo.corridor import JUNCTIONS

        corridor = self.scenario == "corridor"
        if self.mode in CORRIDOR_ONLY and not corridor:
            raise ValueError(f"mode: {self.mode!r} runs only in scenario corridor")
        for i, f in enumerate(self.faults):
            if isinstance(f, ForcedConflict):
                if corridor or i > 0:
                    raise ValueError(f"faults[{i}]: one forced_conflict, on the single junction only")
                if f.at_s >= self.duration_s:
                    raise ValueError(f"faults[{i}].at_s: {f.at_s} is not before the end ({self.duration_s} s)")
                continue
            if not corridor:
                raise ValueError(f"faults[{i}]: clock_unsync needs scenario corridor")
            if f.junction not in JUNCTIONS:
                raise ValueError(f"faults[{i}].junction: {f.junction!r} is not one of {', '.join(JUNCTIONS)}")
            if not f.from_s < f.to_s <= self.duration_s:
                raise ValueError(f"faults[{i}].to_s: {f.to_s} must be after from_s and within the run")
        return self

    @property
    def unsync(self) -> dict[str, tuple[float, float]]:
        """The corridor's clock faults by junction."""
        return {f.junction: (f.from_s, f.to_s) for f in self.faults if isinstance(f, ClockUnsync)}


def parse_sumo_rig(data: Any, source: str = "<rig>") -> SumoRig:
    """Validate a ``kind: sumo`` rig; :class:`ConfigError` lists every problem with its path."""
    try:
        return SumoRig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc)) from exc


@dataclass
class SumoRunResult:
    """A finished traffic rig run, in the shape the CLI reports."""

    rig: SumoRig
    verdict: Verdict
    windows: list[FaultWindow]
    elapsed_s: float
    report: str
    figures: dict[str, Any]
    run: Any  # hil.sumo.rig.RunResult


@dataclass
class CorridorView:
    """A corridor run seen as one rig run: findings, trips and queues of all its junctions."""

    corridor: Any  # hil.sumo.corridor.CorridorResult
    violations: list[Any]
    sim_s: float
    vehicles: int
    mean_delay_s: float
    max_queue: int
    arrivals: list[float]
    series: list[tuple[float, int, int]]
    flashed: str | None
    tripped_at: float | None
    refusals: dict[str, int]
    final_state: str | None = None

    @classmethod
    def of(cls, c: Any) -> CorridorView:
        from hil.sumo.monitor import Violation

        found = [Violation(v.t, v.rule, f"{j} {v.detail}") for j, vs in c.violations.items() for v in vs]
        flashed = [f"{j}: {f}" for j, f in c.flashed.items() if f]
        trips = [t for t in c.tripped_at.values() if t is not None]
        refusals = {f"{j}:{k}": n for j, rs in c.refusals.items() for k, n in rs.items()}
        return cls(
            c, sorted(found, key=lambda v: v.t), c.sim_s, c.vehicles, c.mean_delay_s, c.max_queue,
            c.arrivals, c.series, "; ".join(flashed) or None, min(trips, default=None), refusals,
        )


def coordination_check(rig: SumoRig, view: CorridorView) -> Check:
    """Every junction coordinated for the whole run except while its clock was not synchronised,
    and its drop-out reported (the events ``free`` then ``coordinated``)."""
    c = view.corridor
    problems = []
    for j, secs in c.coordinated_s.items():
        lo, hi = (min(t, view.sim_s) for t in rig.unsync.get(j, (0.0, 0.0)))
        want = view.sim_s - (hi - lo)
        if secs < want - 2.0:
            problems.append(f"{j} coordinated {secs:.0f} of {want:.0f} s")
        events = ["coordinated", "free", "coordinated"][: 1 + (hi > lo) + (hi > lo and hi < view.sim_s)]
        if c.events.get(j) != events:
            problems.append(f"{j} reported {c.events.get(j)}, expected {events}")
    detail = "; ".join(problems) or (
        "every junction coordinated while its clock was synchronised"
        + (f", free while not ({', '.join(sorted(rig.unsync))})" if rig.unsync else "")
    )
    return Check("coordination", not problems, detail, worst=float(len(problems)))


def monitor_checks(rig: SumoRig, r: Any) -> list[Check]:
    """One check per monitor rule; findings from a forced conflict onward are the fault's, not the controller's."""
    forced = next((f.at_s for f in rig.faults if isinstance(f, ForcedConflict)), None)
    own = [v for v in r.violations if forced is None or v.t < forced]
    checks = []
    for rule in MONITOR_RULES:
        found = [v for v in own if v.rule == rule]
        if not found:
            checks.append(Check(f"monitor[{rule}]", True, f"no finding in {r.sim_s:.0f} s", worst=0.0))
            continue
        first = ", ".join(f"t={v.t:.0f} s {v.detail}" for v in found[:3])
        checks.append(
            Check(
                f"monitor[{rule}]", False, f"{len(found)} findings (first: {first})", worst=float(len(found))
            )
        )
    return checks


def verdict_of(rig: SumoRig, r: Any) -> Verdict:
    """Every expectation of a traffic rig, from the run's figures."""
    exp = rig.expect
    checks: list[Check] = monitor_checks(rig, r) if exp.monitor else []
    if isinstance(r, CorridorView) and exp.coordinated and rig.mode in ("fixed", "actuated", "adaptive", "adaptive_counts"):
        checks.append(coordination_check(rig, r))
    forced = [f for f in rig.faults if isinstance(f, ForcedConflict)]
    if forced:
        at = forced[0].at_s
        caught = r.tripped_at is not None and r.tripped_at - at <= CATCH_S + 1e-6
        flashing = r.final_state is not None and set(r.final_state) <= {"o", "O"}
        detail = (
            f"monitor tripped {r.tripped_at - at:.0f} s after the forced conflict; envelope latched "
            f"{r.flashed}; final state flashing: {flashing}"
            if r.tripped_at is not None
            else "the monitor never tripped"
        )
        checks.append(
            Check(
                "forced_conflict_caught",
                caught and flashing,
                detail,
                worst=(r.tripped_at - at) if r.tripped_at is not None else None,
            )
        )
    elif exp.envelope:
        refused = sum(r.refusals.values())
        ok = r.flashed is None and r.tripped_at is None and not refused
        detail = (
            "never latched, no command refused"
            if ok
            else f"latched: {r.flashed}, monitor tripped at {r.tripped_at}, refusals {r.refusals}"
        )
        checks.append(Check("envelope", ok, detail, worst=float(refused)))
    if exp.max_mean_delay_s is not None:
        ok = r.mean_delay_s <= exp.max_mean_delay_s
        checks.append(
            Check(
                "mean_delay",
                ok,
                f"{r.mean_delay_s:.1f} s lost per vehicle (at most {exp.max_mean_delay_s:g})",
                worst=r.mean_delay_s,
            )
        )
    if exp.min_vehicles is not None:
        checks.append(
            Check(
                "vehicles",
                r.vehicles >= exp.min_vehicles,
                f"{r.vehicles} trips (at least {exp.min_vehicles})",
                worst=float(r.vehicles),
            )
        )
    stats = DeviceStats(
        "corridor" if rig.scenario == "corridor" else "junction",
        f"sumo {rig.mode}",
        readings=r.vehicles,
        per_minute=60.0 * len(r.arrivals) / r.sim_s if r.sim_s else None,
        faults=len(rig.faults),
    )
    stats.failed = [c.name for c in checks if not c.ok]
    return Verdict(checks, [stats], r.vehicles, 0)


def sumo_figures(rig: SumoRig, verdict: Verdict, r: Any, elapsed_s: float) -> dict[str, Any]:
    """The HTML report's figures: trips finished per bucket, monitor findings as errors, queue as backlog."""
    span = max(r.sim_s, 1.0)
    width = bucket_s(span)
    n = max(1, math.ceil(span / width))
    arrived = Counter(min(int(t // width), n - 1) for t in r.arrivals)
    found = Counter(min(int(v.t // width), n - 1) for v in r.violations)
    faults = []
    for f in rig.faults:
        if isinstance(f, ForcedConflict):
            end = r.tripped_at if r.tripped_at is not None else span
            label, target, start = f"forced_conflict at {f.at_s:g} s", "junction", f.at_s
        else:
            end, label, target, start = f.to_s, f"clock_unsync {f.junction} {f.from_s:g}-{f.to_s:g} s", f.junction, f.from_s
        faults.append(
            {
                "label": label,
                "kind": f.kind,
                "target": target,
                "start_s": start,
                "end_s": end,
                "injected": True,
                "error": None,
            }
        )
    st = verdict.devices[0]
    return {
        "rig": rig.rig,
        "description": rig.description,
        "ok": verdict.ok,
        "elapsed_s": round(elapsed_s, 3),
        "start_wall": 0.0,
        "end_wall": span,
        "bucket_s": width,
        "rows": r.vehicles,
        "last_seq": 0,
        "summary": (
            f"{r.sim_s:.0f} simulated s under the {rig.mode} controller in {elapsed_s:.0f} s: {r.vehicles} trips, "
            f"mean delay {r.mean_delay_s:.1f} s, longest queue {r.max_queue}, "
            f"{len(r.violations)} monitor findings."
        ),
        "backlog_title": "Queue (vehicles halting on the worst approach)",
        "stored_label": "trips finished",
        "devices": [
            {
                "name": st.name,
                "kind": st.kind,
                "summary": (
                    f"{r.vehicles} trips ({len(r.arrivals)} finished, {r.vehicles - len(r.arrivals)} still on the "
                    f"road at the end); {len(r.violations)} monitor findings; faults: "
                    + (", ".join(f["label"] for f in faults) or "none")
                ),
                "rows": r.vehicles,
                "good": len(r.arrivals),
                "errors": len(r.violations),
                "points": {},
                "stored": [arrived.get(i, 0) for i in range(n)],
                "error_buckets": [found.get(i, 0) for i in range(n)],
                "before_start": 0,
                "after_end": r.vehicles - len(r.arrivals),
                "per_minute": st.per_minute,
                "worst_recovery_s": None,
                "faults": faults,
                "failed": st.failed,
            }
        ],
        "faults": faults,
        "backlog": [[t, q] for t, q, _ in r.series],
        "outages": [],
        "drain_s": None,
        "checks": check_rows(verdict.checks),
        "traffic": {
            "mode": rig.mode,
            "seed": rig.seed,
            "scale": rig.scale,
            "sim_s": r.sim_s,
            "vehicles": r.vehicles,
            "mean_delay_s": round(r.mean_delay_s, 2),
            "max_queue": r.max_queue,
            "monitor_findings": len(r.violations),
        },
    }


def run_sumo_rig(
    rig: SumoRig, work: Path, on_progress: Callable[[Snapshot], None] | None = None
) -> SumoRunResult:
    """Run the traffic rig in ``work`` and judge it."""
    from hil.report import render
    from hil.sumo.rig import run

    t0 = time.monotonic()
    fault_at = next((f.at_s for f in rig.faults if isinstance(f, ForcedConflict)), None)
    windows = (
        [FaultWindow(0, "forced_conflict", "junction", fault_at, fault_at)] if fault_at is not None else []
    )
    windows += [
        FaultWindow(i, "clock_unsync", j, lo, hi) for i, (j, (lo, hi)) in enumerate(sorted(rig.unsync.items()))
    ]

    def step(sim_t: float, partial: Any) -> None:
        if on_progress is None:
            return
        active = ["forced_conflict"] if fault_at is not None and sim_t >= fault_at else []
        failing = sorted(
            {f"monitor[{v.rule}]" for v in partial.violations if fault_at is None or v.t < fault_at}
        )
        on_progress(Snapshot(sim_t, rig.duration_s, active, None, failing, phase="sim"))

    r: Any
    if rig.scenario == "corridor":
        from hil.sumo import corridor

        def corridor_step(sim_t: float, partial: Any) -> None:
            step(sim_t, CorridorView.of(partial))

        r = CorridorView.of(
            corridor.run(rig.mode, rig.seed, rig.scale, rig.duration_s, work, rig.unsync, corridor_step)
        )
    else:
        r = run(rig.mode, rig.seed, rig.scale, rig.duration_s, fault_at, work, on_step=step)
    elapsed = time.monotonic() - t0
    for w in windows:
        if w.kind == "forced_conflict":
            w.start_wall = fault_at
            w.end_wall = r.tripped_at if r.tripped_at is not None else rig.duration_s
        else:
            w.start_wall, w.end_wall = w.planned_start_s, w.planned_end_s
    verdict = verdict_of(rig, r)
    header = (
        f"HIL traffic rig {rig.rig}: {rig.mode}, {r.sim_s:.0f} simulated s in {elapsed:.1f} s; {r.vehicles} "
        f"trips, mean delay {r.mean_delay_s:.1f} s, longest queue {r.max_queue}, monitor findings "
        f"{len(r.violations)}"
    )
    report = render(rig.rig, verdict, windows, elapsed, header)
    return SumoRunResult(rig, verdict, windows, elapsed, report, sumo_figures(rig, verdict, r, elapsed), r)
