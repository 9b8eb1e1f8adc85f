"""The ``traffic`` section of the site config: intersections, their envelope limits, stages and plans.

Sources for the limits: the ITE change-interval formula ``Y = t + v / (2a + 2Gg)`` (ITE 2020;
t = 1 s and a = 3.05 m/s^2 per NCHRP 03-95 field data), MUTCD 2009 §4D.26 (yellow about 3 to 6 s,
red clearance at most 6 s) and §4E.06 (pedestrian clearance at 1.1 m/s, 3.5 ft/s).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from control.config_base import NAME
from drivers.signals.config import GpioHeadConfig
from kernel.config_base import ModbusUnit, RelPath, StrictModel, TcpPort

GRAVITY = 9.81
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def ite_yellow_s(
    speed_kmh: float, reaction_s: float = 1.0, decel_mps2: float = 3.05, grade: float = 0.0
) -> float:
    """ITE yellow change interval, rounded up to 0.5 s (COMAR 11.04.14.03): 3.5 s at 50 km/h."""
    v = speed_kmh / 3.6
    raw = reaction_s + v / (2 * decel_mps2 + 2 * grade * GRAVITY)
    return math.ceil(raw * 2 - 1e-9) / 2


CONTROL_TICK_S = 0.1
"""The control period of every intersection (the link timeout plus one tick stays within 1 s)."""


class SignalGroupConfig(StrictModel):
    """One signal group: a vehicle movement or a crosswalk, shown by one or more heads."""

    name: str = Field(pattern=NAME)
    kind: Literal["vehicle", "pedestrian"] = "vehicle"
    crossing_m: float | None = Field(default=None, gt=0, le=60, description="Crosswalk length (pedestrian).")

    @model_validator(mode="after")
    def _crossing(self) -> SignalGroupConfig:
        if self.kind == "pedestrian" and self.crossing_m is None:
            raise ValueError(f"crossing_m: required for pedestrian group {self.name!r} (sets its clearance)")
        if self.kind == "vehicle" and self.crossing_m is not None:
            raise ValueError(
                f"crossing_m: only pedestrian groups have one ({self.name!r} is a vehicle group)"
            )
        return self


class PermissiveConfig(StrictModel):
    """A foe pair the approved plan shows together: ``yield_`` gives way and may never show G."""

    yield_: str = Field(alias="yield")
    to: str


class LimitsConfig(StrictModel):
    """The envelope's limits for one intersection.

    Link policy: the junction flashes after ``link_failures`` consecutive failed exchanges with its
    output or when no good read-back came for ``link_timeout_s``, whichever comes first; the
    timeout plus one control tick stays within 1 s.
    """

    speed_kmh: float = Field(default=50.0, ge=20, le=90, description="Approach speed for the ITE yellow.")
    reaction_s: float = Field(default=1.0, ge=0.5, le=2.5)
    decel_mps2: float = Field(default=3.05, ge=2.0, le=4.5)
    grade: float = Field(default=0.0, ge=-0.08, le=0.08, description="Approach grade, +0.02 uphill.")
    yellow_s: float | None = Field(default=None, description="Defaults to the ITE value.")
    yellow_min_s: float = Field(default=3.0, ge=3.0, le=6.0)
    yellow_max_s: float = Field(default=6.0, ge=3.0, le=6.0)
    red_clearance_s: float = Field(default=2.0, ge=1.0, le=6.0)
    min_green_s: float = Field(default=5.0, ge=3.0, le=30.0)
    min_walk_s: float = Field(default=7.0, ge=4.0, le=30.0)
    ped_speed_mps: float = Field(default=1.1, ge=0.8, le=1.5)
    min_ped_clear_s: float = Field(default=3.0, ge=2.0, le=30.0, description="Shortest flashing DON'T WALK.")
    link_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=1.0 - CONTROL_TICK_S,
        description="No good read-back this long: flash (plus one tick, within 1 s).",
    )
    ped_max_wait_s: float = Field(
        default=120.0,
        ge=30.0,
        le=300.0,
        description="A push-button call gets its walk within this long (stages in between are cut short).",
    )
    link_failures: int = Field(
        default=3,
        ge=1,
        le=10,
        description="This many consecutive failed exchanges with the output: flash (1 = the first).",
    )

    @property
    def ite_yellow_s(self) -> float:
        """The ITE yellow for this approach."""
        return ite_yellow_s(self.speed_kmh, self.reaction_s, self.decel_mps2, self.grade)

    @property
    def yellow(self) -> float:
        """The yellow the controller times."""
        return self.yellow_s if self.yellow_s is not None else max(self.ite_yellow_s, self.yellow_min_s)

    @model_validator(mode="after")
    def _yellow(self) -> LimitsConfig:
        if self.yellow_max_s < self.yellow_min_s:
            raise ValueError(f"yellow_max_s: {self.yellow_max_s} is below yellow_min_s {self.yellow_min_s}")
        ite = self.ite_yellow_s
        if ite > self.yellow_max_s:
            raise ValueError(
                f"speed_kmh: {self.speed_kmh} needs an ITE yellow of {ite} s, "
                f"above yellow_max_s {self.yellow_max_s}"
            )
        if self.yellow_s is not None:
            if not self.yellow_min_s <= self.yellow_s <= self.yellow_max_s:
                raise ValueError(
                    f"yellow_s: {self.yellow_s} is outside {self.yellow_min_s}..{self.yellow_max_s} s"
                )
            if self.yellow_s < ite:
                raise ValueError(
                    f"yellow_s: {self.yellow_s} is below the ITE change interval {ite} s "
                    f"at {self.speed_kmh} km/h"
                )
        return self


class StageConfig(StrictModel):
    """A set of groups that run together: ``green`` show G (or WALK), ``yield`` show g."""

    name: str = Field(pattern=NAME)
    green: list[str] = Field(default_factory=list)
    yield_: list[str] = Field(default_factory=list, alias="yield")
    min_green_s: float | None = Field(default=None, ge=3.0, le=120.0)
    max_green_s: float = Field(default=60.0, ge=3.0, le=300.0)
    skippable: bool = Field(default=False, description="Adaptive and actuated modes skip it with no demand.")


class PlanConfig(StrictModel):
    """A fixed-time plan: splits per stage (green + yellow + red clearance) summing to the cycle."""

    name: str = Field(pattern=NAME)
    cycle_s: float = Field(gt=0, le=300)
    offset_s: float = Field(default=0.0, ge=0)
    splits: dict[str, float]

    @model_validator(mode="after")
    def _sum(self) -> PlanConfig:
        total = sum(self.splits.values())
        if abs(total - self.cycle_s) > 1e-6:
            raise ValueError(f"splits: they sum to {total:g} s but cycle_s is {self.cycle_s:g} s")
        if self.offset_s >= self.cycle_s:
            raise ValueError(f"offset_s: {self.offset_s:g} is not below cycle_s {self.cycle_s:g}")
        return self


class CoordinationConfig(StrictModel):
    """Coordination with the neighbouring junctions of an arterial (a green wave).

    ``plan`` holds the common cycle (``cycle_s``), this junction's ``offset_s`` on the shared time
    base (wall time, seconds since the epoch, modulo the cycle) and the splits: in actuated and
    adaptive mode the coordinated ``stage`` is held green from its planned start to its planned end
    (its yield point) and every other stage ends by its planned end (its force-off), so unused side
    time returns to the arterial early. Minimum greens, maximum greens and pedestrian walks and
    clearances are never cut for it. Only a synchronised clock is a shared time base: without one
    the junction runs uncoordinated in its own mode and reports ``coordination`` = ``free``.
    """

    plan: str = Field(description="The plan with the common cycle, this junction's offset and its splits.")
    stage: str = Field(description="The coordinated (arterial) stage.")


class ScheduleEntry(StrictModel):
    """From ``start`` (local time) on the given day type, run ``plan`` in ``mode``."""

    day_type: str = "all"
    start: dt.time
    plan: str
    mode: Literal["fixed", "actuated", "adaptive"] = "fixed"


class CalendarDay(StrictModel):
    """A date (holiday, Tết) that runs another day type's entries."""

    date: dt.date
    day_type: str


class ScheduleConfig(StrictModel):
    """Time-of-day and calendar schedule."""

    day_types: dict[str, list[str]] = Field(
        default_factory=lambda: {"weekday": ["mon", "tue", "wed", "thu", "fri"], "weekend": ["sat", "sun"]}
    )
    calendar: list[CalendarDay] = Field(default_factory=list)
    entries: list[ScheduleEntry] = Field(min_length=1)

    @field_validator("day_types")
    @classmethod
    def _weekdays(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, days in value.items():
            for day in days:
                if day not in WEEKDAYS:
                    raise ValueError(f"day_types.{key}: {day!r} is not one of {', '.join(WEEKDAYS)}")
        return value


class DetectorConfig(StrictModel):
    """A loop detector or a camera zone feeding one signal group, or a pedestrian push button.

    A ``button`` (a ``gpio`` input of kind ``button``) calls the walk of its pedestrian group: a
    crosswalk with buttons walks only when called, within ``limits.ped_max_wait_s``.

    ``source`` names the device that sees it (a ``camera`` for a zone, a ``gpio`` device for a loop);
    ``input`` is the zone or input name in that device (default: the detector's own name). Without a
    source, the detector is fed directly (the SUMO rig, tests).
    """

    name: str = Field(pattern=NAME)
    group: str
    kind: Literal["loop", "zone", "button"] = "loop"
    source: str | None = Field(default=None, description="Camera (zone) or gpio device (loop) that feeds it.")
    input: str | None = Field(default=None, description="Zone or input name in the source; default: name.")


class ModbusOutputConfig(StrictModel):
    """A signal controller on Modbus TCP; channel i holds the group at position i of ``groups``."""

    driver: Literal["modbus"]
    host: str
    port: TcpPort = 502
    unit: ModbusUnit = 1
    timeout_s: float = Field(default=0.3, gt=0, lt=1.0)
    buttons: int = Field(
        default=0, ge=0, le=16, description="Pedestrian push-button inputs on the controller (input 3+n)."
    )


class GpioOutputConfig(StrictModel):
    """Relays per signal head on the board's GPIO (small junctions)."""

    driver: Literal["gpio"]
    heads: dict[str, GpioHeadConfig]


class SumoOutputConfig(StrictModel):
    """The SUMO rig: each group maps to link indices of the traffic light."""

    driver: Literal["sumo"]
    tls_id: str
    links: dict[str, list[int]]


OutputConfig = Annotated[
    Union[ModbusOutputConfig, GpioOutputConfig, SumoOutputConfig], Field(discriminator="driver")
]


class IntersectionConfig(StrictModel):
    """One signalised intersection: its approved plan (groups, conflicts, stages) and envelope limits."""

    name: str = Field(pattern=NAME)
    groups: list[SignalGroupConfig] = Field(min_length=1)
    conflicts: list[tuple[str, str]] = Field(description="Foe pairs from the approved plan (program card).")
    permissive: list[PermissiveConfig] = Field(default_factory=list)
    limits: LimitsConfig = LimitsConfig()
    stages: list[StageConfig] = Field(min_length=2)
    plans: list[PlanConfig] = Field(min_length=1)
    schedule: ScheduleConfig | None = None
    detectors: list[DetectorConfig] = Field(default_factory=list)
    gap_s: float = Field(default=3.0, ge=1.0, le=10.0, description="Actuated passage time (gap-out).")
    coordination: CoordinationConfig | None = None
    counts_s: float = Field(
        default=60.0, ge=5.0, le=3600.0,
        description="Report each loop's vehicles every this many seconds (detector.<loop>.count).",
    )  # fmt: skip
    output: OutputConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IntersectionConfig:
        problems = _plan_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def group(self, name: str) -> SignalGroupConfig:
        """The group called ``name``."""
        return next(g for g in self.groups if g.name == name)


def _plan_problems(ix: IntersectionConfig) -> list[str]:
    """Cross-field checks; each message names the offending field."""
    out: list[str] = []
    names = [g.name for g in ix.groups]
    known = set(names)
    if len(known) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        out.append(f"groups: duplicate names {dup}")
    foes: set[frozenset[str]] = set()
    for i, (a, b) in enumerate(ix.conflicts):
        for n in (a, b):
            if n not in known:
                out.append(f"conflicts[{i}]: {n!r} is not a signal group")
        if a == b:
            out.append(f"conflicts[{i}]: a group cannot conflict with itself ({a!r})")
        foes.add(frozenset((a, b)))
    yielding: dict[frozenset[str], str] = {}
    for i, p in enumerate(ix.permissive):
        pair = frozenset((p.yield_, p.to))
        if pair not in foes:
            out.append(f"permissive[{i}]: {p.yield_!r} and {p.to!r} are not in conflicts")
        yielding[pair] = p.yield_
    stage_names = [s.name for s in ix.stages]
    for si, st in enumerate(ix.stages):
        shown = dict.fromkeys(st.green, "G") | dict.fromkeys(st.yield_, "g")
        for n in shown:
            if n not in known:
                out.append(f"stages[{si}]: {n!r} is not a signal group")
        for n in st.yield_:
            if n in known and ix.group(n).kind == "pedestrian":
                out.append(f"stages[{si}].yield: pedestrian group {n!r} can only be in green")
        for pair in foes:
            a, b = tuple(pair)
            if a in shown and b in shown:
                y = yielding.get(pair)
                if y is None:
                    out.append(f"stages[{si}]: conflicting groups {a!r} and {b!r} are shown together")
                elif shown[y] == "G":
                    out.append(
                        f"stages[{si}]: {y!r} must yield to its permissive foe, so it belongs in yield"
                    )
        if st.min_green_s is not None and st.min_green_s > st.max_green_s:
            out.append(f"stages[{si}].min_green_s: {st.min_green_s} is above max_green_s {st.max_green_s}")
    lim = ix.limits
    for pi, plan in enumerate(ix.plans):
        for sname, split in plan.splits.items():
            if sname not in stage_names:
                out.append(f"plans[{pi}].splits.{sname}: not a stage")
                continue
            need = stage_min_green(ix, ix.stages[stage_names.index(sname)]) + lim.yellow + lim.red_clearance_s
            if split < need:
                out.append(
                    f"plans[{pi}].splits.{sname}: {split:g} s is below the stage's minimum "
                    f"{need:g} s (min green + yellow + red clearance)"
                )
    out.extend(_coordination_problems(ix))
    if ix.schedule is not None:
        plan_names = {p.name for p in ix.plans}
        day_types = set(ix.schedule.day_types) | {"all"}
        for ei, e in enumerate(ix.schedule.entries):
            if e.plan not in plan_names:
                out.append(f"schedule.entries[{ei}].plan: {e.plan!r} is not a plan")
            if e.day_type not in day_types:
                out.append(f"schedule.entries[{ei}].day_type: {e.day_type!r} is not a day type")
        for ci, c in enumerate(ix.schedule.calendar):
            if c.day_type not in day_types:
                out.append(f"schedule.calendar[{ci}].day_type: {c.day_type!r} is not a day type")
    kinds = {g.name: g.kind for g in ix.groups}
    for di, d in enumerate(ix.detectors):
        if d.group not in known:
            out.append(f"detectors[{di}].group: {d.group!r} is not a signal group")
        elif (d.kind == "button") != (kinds[d.group] == "pedestrian"):
            what = (
                "a push button calls a pedestrian group"
                if d.kind == "button"
                else "a pedestrian group has buttons"
            )
            out.append(f"detectors[{di}].group: {d.group!r}: {what} (kind {d.kind})")
        elif d.kind == "button" and d.source is None and d.input is not None:
            count = ix.output.buttons if isinstance(ix.output, ModbusOutputConfig) else 0
            index = d.input.removeprefix("controller:")
            if not d.input.startswith("controller:") or not index.isdigit() or int(index) >= count:
                out.append(
                    f"detectors[{di}].input: {d.input!r} is not a push button of the signal controller "
                    f"(controller:0..{count - 1}; output.buttons is {count})"
                )
    out.extend(_output_problems(ix, known))
    return out


def _coordination_problems(ix: IntersectionConfig) -> list[str]:
    co = ix.coordination
    if co is None:
        return []
    plan = next((p for p in ix.plans if p.name == co.plan), None)
    if plan is None:
        return [f"coordination.plan: {co.plan!r} is not a plan"]
    stage = next((s for s in ix.stages if s.name == co.stage), None)
    if stage is None:
        return [f"coordination.stage: {co.stage!r} is not a stage"]
    out: list[str] = []
    if stage.skippable:
        out.append(
            f"coordination.stage: {co.stage!r} is skippable; the coordinated stage must run every cycle"
        )
    missing = [s.name for s in ix.stages if s.name not in plan.splits]
    if missing:
        out.append(f"coordination.plan: plan {co.plan!r} has no split for {missing} (their force-offs)")
    green = plan.splits.get(co.stage, 0.0) - ix.limits.yellow - ix.limits.red_clearance_s
    if green > stage.max_green_s:
        out.append(
            f"coordination.stage: {co.stage!r} is held {green:g} s by plan {co.plan!r}, "
            f"above its max_green_s {stage.max_green_s:g}"
        )
    return out


def _output_problems(ix: IntersectionConfig, known: set[str]) -> list[str]:
    out: list[str] = []
    if isinstance(ix.output, GpioOutputConfig):
        pins: list[int] = []
        yielding = {n for st in ix.stages for n in st.yield_}
        for n, head in ix.output.heads.items():
            if n not in known:
                out.append(f"output.heads.{n}: not a signal group")
            elif ix.group(n).kind == "vehicle" and head.yellow is None:
                out.append(f"output.heads.{n}.yellow: a vehicle head needs a yellow relay")
            elif ix.group(n).kind == "pedestrian" and head.yellow is not None:
                out.append(
                    f"output.heads.{n}.yellow: a pedestrian head has no yellow (the clearance blinks red)"
                )
            if n in yielding and head.yield_green is None:
                out.append(
                    f"output.heads.{n}.yield_green: the plan runs {n!r} permissive, it needs that aspect"
                )
            pins += [p for p in (head.red, head.yellow, head.green, head.yield_green) if p is not None]
        missing = known - set(ix.output.heads)
        if missing:
            out.append(f"output.heads: no head for {sorted(missing)}")
        if len(set(pins)) != len(pins):
            out.append("output.heads: a pin is used twice")
    if isinstance(ix.output, SumoOutputConfig):
        for n in ix.output.links:
            if n not in known:
                out.append(f"output.links.{n}: not a signal group")
    return out


def stage_min_green(ix: IntersectionConfig, stage: StageConfig) -> float:
    """The shortest green a stage may have: vehicle min green, or walk plus its clearance."""
    lim = ix.limits
    need = stage.min_green_s if stage.min_green_s is not None else lim.min_green_s
    for n in stage.green:
        g = ix.group(n) if n in {x.name for x in ix.groups} else None
        if g is not None and g.kind == "pedestrian":
            need = max(need, lim.min_walk_s + ped_clear_s(ix, n))
    return need


def ped_clear_s(ix: IntersectionConfig, group: str) -> float:
    """Flashing DON'T WALK: crossing time less the yellow and red clearance that follow (MUTCD 4E.06)."""
    lim = ix.limits
    g = ix.group(group)
    crossing = (g.crossing_m or 0.0) / lim.ped_speed_mps
    return max(lim.min_ped_clear_s, math.ceil(crossing - lim.yellow - lim.red_clearance_s))


class TrafficConfig(StrictModel):
    """The optional ``traffic`` section of the site config."""

    intersections: list[IntersectionConfig] = Field(default_factory=list)
    state_dir: RelPath | None = Field(
        default=None,
        description="Where each intersection keeps the centre's last coordination plan across restarts "
        "(default: a folder traffic/ beside the store, in the agent's state directory).",
    )

    @model_validator(mode="after")
    def _unique(self) -> TrafficConfig:
        seen: set[str] = set()
        for i, ix in enumerate(self.intersections):
            if ix.name in seen:
                raise ValueError(f"intersections[{i}].name: {ix.name!r} is used twice")
            seen.add(ix.name)
        return self


def detector_source_problem(traffic: TrafficConfig, devices: list[object]) -> str | None:
    """The first detector whose ``source`` is not a device that publishes it, as ``traffic.<path>: problem``.

    A zone needs a ``camera`` with that zone; a loop needs a ``gpio`` device with an input of kind
    ``loop`` by that name.
    """
    by_name = {getattr(d, "name", ""): d for d in devices}
    for i, ix in enumerate(traffic.intersections):
        for j, det in enumerate(ix.detectors):
            if det.source is None:
                continue
            at = f"traffic.intersections[{i}].detectors[{j}]"
            want = "camera" if det.kind == "zone" else "gpio"
            dev = by_name.get(det.source)
            if dev is None or getattr(dev, "driver", "") != want:
                have = sorted(n for n, d in by_name.items() if getattr(d, "driver", "") == want)
                return f"{at}.source: {det.source!r} is not a {want} device of this site {have}"
            name = det.input or det.name
            if want == "camera":
                zones = [z.name for z in getattr(dev, "zones", [])]
                if name not in zones:
                    return f"{at}.input: {name!r} is not a zone of camera {det.source} {zones}"
            else:
                loops = [n.name for n in getattr(dev, "inputs", []) if n.kind == det.kind]
                if name not in loops:
                    return f"{at}.input: {name!r} is not a {det.kind} input of {det.source} {loops}"
    return None
