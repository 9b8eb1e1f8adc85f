"""Commands from the centre for lighting, validated like config before anything changes.

Bodies (the signed envelope around them is sync/wire.py's business):

- ``{"action": "override", "circuit"|"group": NAME or "all": true, "level": 0-100, "duration_s": S}``
- ``{"action": "clear_override", "circuit"|"group": NAME or "all": true}``
- ``{"action": "switch_profile", "group": NAME, "profile": NAME or null}`` (null: back to the configured one)
- ``{"action": "recalibrate", "circuit"|"group": NAME or "all": true}`` (learn the meter ratio again)

An optional ``"id"`` is kept with an override. Outcomes are :class:`kernel.commands.CommandOutcome`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from control.config_base import NAME
from kernel.config_base import StrictModel, validation_problems


class _Targeted(StrictModel):
    id: str = Field(default="", max_length=128)
    circuit: str | None = Field(default=None, pattern=NAME)
    group: str | None = Field(default=None, pattern=NAME)
    all: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> _Targeted:
        chosen = [k for k in ("circuit", "group") if getattr(self, k) is not None] + (
            ["all"] if self.all else []
        )
        if len(chosen) != 1:
            raise ValueError(f"name exactly one target: circuit, group or all: true (got {chosen or 'none'})")
        return self


class OverrideCommand(_Targeted):
    """Hold circuits at ``level`` (0 = off) for ``duration_s`` seconds, then return to the schedule."""

    action: Literal["override"]
    level: int = Field(ge=0, le=100)
    duration_s: float = Field(gt=0)


class ClearOverrideCommand(_Targeted):
    """End overrides now."""

    action: Literal["clear_override"]


class RecalibrateCommand(_Targeted):
    """Forget circuits' learned power calibration (after lamps were replaced) and learn it again."""

    action: Literal["recalibrate"]


class SwitchProfileCommand(StrictModel):
    """Use another dimming profile for a group from now on (persisted), or the configured one again."""

    action: Literal["switch_profile"]
    id: str = Field(default="", max_length=128)
    group: str = Field(pattern=NAME)
    profile: str | None = Field(pattern=NAME)


Command = Annotated[
    OverrideCommand | ClearOverrideCommand | SwitchProfileCommand | RecalibrateCommand,
    Field(discriminator="action"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Command)
ACTIONS = ("override", "clear_override", "switch_profile", "recalibrate")


AnyCommand = OverrideCommand | ClearOverrideCommand | SwitchProfileCommand | RecalibrateCommand


def parse_command(body: Any) -> AnyCommand | list[str]:
    """The typed command, or the list of ``path: message`` problems that refuse it."""
    if not isinstance(body, dict):
        return ["(top level): a command must be a JSON object with an 'action'"]
    if body.get("action") not in ACTIONS:
        return [f"action: {body.get('action')!r} is not one of {', '.join(ACTIONS)}"]
    try:
        cmd: AnyCommand = _ADAPTER.validate_python(body)
    except ValidationError as exc:
        return [_strip_tag(p) for p in validation_problems(exc)]
    return cmd


def _strip_tag(problem: str) -> str:
    for tag in ("override.", "clear_override.", "switch_profile.", "recalibrate."):
        if problem.startswith(tag):
            return problem[len(tag) :]
    for tag in ("override: ", "clear_override: ", "switch_profile: ", "recalibrate: "):
        if problem.startswith(tag):
            return "(top level): " + problem[len(tag) :]
    return problem
