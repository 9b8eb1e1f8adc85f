"""Commands from the centre for the traffic signals: mode and plan changes, operator flash and clear.

Signature, target, expiry and replay are checked by the sync layer and
:class:`kernel.commands.CommandRouter`; the router hands the body of a command of kind ``traffic``
to :meth:`TrafficCommands.apply_command` (see :meth:`TrafficCommands.register`). Bodies::

    {"action": "set_mode", "intersection": "c", "mode": "adaptive", "plan": "am_peak"}
    {"action": "set_plan", "intersection": "c", "plan": {"name": "p2", "cycle_s": 90, "splits": {...}}}
    {"action": "coordinate", "intersection": "c", "cycle_s": 80, "start_s": 24, "from_s": 1.7e9,
     "splits": {...}}
    {"action": "flash", "intersection": "c", "reason": "police on site"}
    {"action": "clear_flash", "intersection": "c", "operator": "nguyen.van.a"}
    {"action": "status", "intersection": "c"}

``coordinate`` hands a coordinated intersection its part of a corridor plan computed from counts
(:func:`control.traffic.coordplan.next_plan`): the common cycle, its coordinated stage's start on
the shared time base (modulo the cycle), its splits, and from when (a shared time base value); the
controller takes it up at its coordinated stage's next start from then on.

A plan is validated against the intersection's approved plan and limits exactly like the site
config; the envelope's limits can never be changed by a command.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from pydantic import ValidationError

from control.traffic.config import IntersectionConfig, PlanConfig
from control.traffic.keep import KeptPlan
from control.traffic.runner import Intersection
from kernel.commands import CommandOutcome, CommandRouter, IncomingCommand
from kernel.config_base import validation_problems
from kernel.errors import AgentError, SafetyViolation

MODES = ("fixed", "actuated", "adaptive")
KIND = "traffic"


def check_coordinate(ix: IntersectionConfig, body: Mapping[str, Any]) -> KeptPlan | CommandOutcome:
    """A ``coordinate`` body checked against ``ix`` like a plan in the site config (the refusal
    names the field), or the refusal. The centre's command and a kept plan both pass here."""
    co = ix.coordination
    if co is None:
        return _outcome("refused", f"intersection {ix.name} has no coordination section")
    start, since, until = body.get("start_s"), body.get("from_s"), body.get("until_s")
    if not _number(start) or not _number(since):
        return _outcome("refused", "start_s and from_s: numbers (seconds on the shared time base)")
    if until is not None and (not _number(until) or until <= since):
        return _outcome("refused", "until_s: a number after from_s (seconds on the shared time base)")
    names = [s.name for s in ix.stages]
    splits = body.get("splits")
    cycle = body.get("cycle_s")
    if not isinstance(splits, dict) or not _number(cycle) or cycle <= 0:
        return _outcome("refused", "cycle_s and splits: a positive cycle and a split per stage")
    try:
        before = sum(float(splits.get(n, 0.0)) for n in names[: names.index(co.stage)])
    except (TypeError, ValueError):
        return _outcome("refused", "splits: a number of seconds per stage")
    raw = {"name": co.plan, "cycle_s": cycle, "offset_s": (start - before) % cycle, "splits": splits}
    data = ix.model_dump(by_alias=True)
    data["plans"] = [p for p in data["plans"] if p["name"] != co.plan] + [raw]
    try:
        checked = IntersectionConfig.model_validate(data)
    except ValidationError as exc:
        return _outcome("refused", "; ".join(validation_problems(exc)), rule="plan_out_of_range")
    plan = checked.plans[-1]
    return KeptPlan(
        intersection=ix.name,
        cycle_s=plan.cycle_s,
        start_s=float(start),
        from_s=float(since),
        splits=dict(plan.splits),
        until_s=None if until is None else float(until),
    )


def _number(value: object) -> TypeGuard[float]:
    """A finite int or float; ``true``/``false`` (a bool is an int to Python) and NaN/Infinity are not."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _outcome(status: str, detail: str, **extra: Any) -> CommandOutcome:
    reason = detail if not extra else f"{detail} {json.dumps(extra, sort_keys=True)}"
    if status == "applied":
        return CommandOutcome.accepted(reason)
    if status == "refused":
        return CommandOutcome.refused(reason)
    return CommandOutcome("failed", reason)


class TrafficCommands:
    """Applies command bodies to the running intersections; every call returns an outcome dict."""

    def __init__(self, intersections: Mapping[str, Intersection]) -> None:
        self._ix = dict(intersections)

    def register(self, router: CommandRouter) -> None:
        """Route commands of kind ``traffic`` here."""
        router.register(KIND, self)

    def apply_command(self, body: Mapping[str, Any], cmd: IncomingCommand | None = None) -> CommandOutcome:
        """Apply one verified command body; never raises for a bad body, it answers ``refused``.

        ``cmd``: the whole command (its id and times are kept with an accepted ``coordinate``)."""
        kind = body.get("action")
        name = body.get("intersection")
        inter = self._ix.get(name) if isinstance(name, str) else None
        if inter is None:
            return _outcome("refused", f"intersection: {name!r} is not configured here")
        if kind == "coordinate":
            return self._guarded(inter, lambda: self._coordinate(inter, body, cmd))
        handler = {
            "set_mode": self._set_mode,
            "set_plan": self._set_plan,
            "flash": self._flash,
            "clear_flash": self._clear,
            "status": self._status,
        }.get(str(kind))
        if handler is None:
            return _outcome("refused", f"action: {kind!r} is not a traffic command")
        return self._guarded(inter, lambda: handler(inter, body))

    @staticmethod
    def _guarded(inter: Intersection, apply: Callable[[], CommandOutcome]) -> CommandOutcome:
        """Apply under the intersection's lock; a refusal or error of the envelope becomes the answer."""
        try:
            with inter.lock:
                return apply()
        except SafetyViolation as exc:
            return _outcome("refused", str(exc), rule=exc.rule)
        except AgentError as exc:
            return _outcome("error", str(exc))

    def _set_mode(self, inter: Intersection, body: Mapping[str, Any]) -> CommandOutcome:
        mode = body.get("mode")
        if mode not in MODES:
            return _outcome("refused", f"mode: {mode!r} is not one of {', '.join(MODES)}")
        plan_name = body.get("plan", inter.controller.plan.name)
        plan = next((p for p in inter.ix.plans if p.name == plan_name), None)
        if plan is None:
            return _outcome("refused", f"plan: {plan_name!r} is not a plan of {inter.ix.name}")
        inter.controller.set_mode(mode, plan)
        return _outcome("applied", f"{mode} with plan {plan.name} from the next cycle")

    def _set_plan(self, inter: Intersection, body: Mapping[str, Any]) -> CommandOutcome:
        raw = body.get("plan")
        data = inter.ix.model_dump(by_alias=True)
        plans = [p for p in data["plans"] if not isinstance(raw, dict) or p["name"] != raw.get("name")]
        data["plans"] = [*plans, raw]
        try:
            checked = IntersectionConfig.model_validate(data)
        except ValidationError as exc:
            return _outcome("refused", "; ".join(validation_problems(exc)), rule="plan_out_of_range")
        plan: PlanConfig = checked.plans[-1]
        inter.ix = checked
        inter.controller.ix = checked
        inter.controller.set_mode(inter.controller.next_mode, plan)
        return _outcome("applied", f"plan {plan.name} (cycle {plan.cycle_s:g} s) from the next cycle")

    def _coordinate(
        self, inter: Intersection, body: Mapping[str, Any], cmd: IncomingCommand | None
    ) -> CommandOutcome:
        checked = check_coordinate(inter.ix, body)
        if isinstance(checked, CommandOutcome):
            return checked
        if cmd is not None:
            checked = dataclasses.replace(
                checked, command_id=cmd.command_id, issued_at=cmd.issued_at, expires_at=cmd.expires_at
            )
        inter.coordinate(dataclasses.replace(checked, config=inter.fingerprint))
        until = "" if checked.until_s is None else f", until {checked.until_s:g}"
        return _outcome(
            "applied",
            f"coordination: cycle {checked.cycle_s:g} s, start {checked.start_s:g} s, "
            f"from {checked.from_s:g}{until}",
        )

    def _flash(self, inter: Intersection, body: Mapping[str, Any]) -> CommandOutcome:
        inter.envelope.latch("operator_flash", str(body.get("reason", "flash ordered by the centre")))
        return _outcome("applied", "flashing yellow, latched")

    def _clear(self, inter: Intersection, body: Mapping[str, Any]) -> CommandOutcome:
        operator = body.get("operator")
        if not isinstance(operator, str) or not operator:
            return _outcome("refused", "operator: who clears the flash must be named")
        was = inter.envelope.latched
        inter.clear(operator)
        if inter.envelope.latched is not None:
            return _outcome("error", f"still flashing: {inter.envelope.latched}")
        return _outcome("applied", f"cleared ({was}); all red, then the first stage")

    def _status(self, inter: Intersection, body: Mapping[str, Any]) -> CommandOutcome:
        c = inter.controller
        return _outcome(
            "applied",
            "status",
            latched=inter.envelope.latched,
            mode=c.mode,
            plan=c.plan.name,
            next_mode=c.next_mode,
            next_plan=c.next_plan.name,
            stage=c.current.name,
            shown={n: i.value for n, i in inter.envelope.shown().items()},
            refusals=dict(inter.envelope.refusals),
        )
