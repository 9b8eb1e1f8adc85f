"""The centre's coordination plan kept across restarts and flash clears.

A ``coordinate`` command the junction accepted is written to ``<state_dir>/<intersection>.coordination.json``
(one small JSON file per intersection, mode 0600, replaced atomically: temporary file, fsync, rename,
fsync of the folder), with the command's id and times, the plan's validity on the shared time base
(``until_s``, when the centre set one) and a fingerprint of the intersection config it was checked
against (:func:`config_fingerprint`). On start, and after an operator clears a flash, the junction
takes it up again when it is still valid for the running config; a kept plan for another config or
one past its ``until_s`` is dropped. An unreadable file is moved aside (``.corrupt``) and ignored.

The kept body is re-applied through the same validation as the command
(:func:`control.traffic.commands.check_coordinate`) and every state change still goes through the
safety envelope: keeping a plan changes only when the junction takes it up, never what it may show.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from control.traffic.config import IntersectionConfig

log = logging.getLogger("kbe.traffic")

VERSION = 1
SUFFIX = ".coordination.json"


def config_fingerprint(ix: IntersectionConfig) -> str:
    """SHA-256 (hex, 16 digits) of what a coordination plan is checked against: groups, conflicts,
    permissive pairs, limits, stages, the coordination section and its configured plan."""
    co = ix.coordination
    plan = next((p for p in ix.plans if co is not None and p.name == co.plan), None)
    doc = {
        "groups": [g.model_dump(mode="json") for g in ix.groups],
        "conflicts": [list(c) for c in ix.conflicts],
        "permissive": [p.model_dump(mode="json") for p in ix.permissive],
        "limits": ix.limits.model_dump(mode="json"),
        "stages": [s.model_dump(mode="json") for s in ix.stages],
        "coordination": co.model_dump(mode="json") if co is not None else None,
        "plan": plan.model_dump(mode="json") if plan is not None else None,
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class KeptPlan:
    """A ``coordinate`` command's plan, with what it is kept with: the command's id and times and
    the fingerprint of the config it was accepted for."""

    intersection: str
    cycle_s: float
    start_s: float
    from_s: float
    splits: dict[str, float] = field(default_factory=dict)
    until_s: float | None = None  # on the shared time base; None: until the centre replaces it
    command_id: str = ""
    issued_at: float = 0.0
    expires_at: float = 0.0  # the command's delivery expiry (not the plan's validity)
    config: str = ""  # config_fingerprint() of the intersection it was accepted for

    def body(self) -> dict[str, Any]:
        """The command body, to be checked and applied again like the centre's command."""
        out: dict[str, Any] = {
            "action": "coordinate",
            "intersection": self.intersection,
            "cycle_s": self.cycle_s,
            "start_s": self.start_s,
            "from_s": self.from_s,
            "splits": dict(self.splits),
        }
        if self.until_s is not None:
            out["until_s"] = self.until_s
        return out

    def expired(self, now_tb: float | None) -> bool:
        """True when the plan's validity has passed at ``now_tb`` (unknown time: not expired)."""
        return self.until_s is not None and now_tb is not None and now_tb >= self.until_s

    @classmethod
    def from_json(cls, data: bytes) -> KeptPlan:
        """Parse a kept plan; raises ValueError (or TypeError, KeyError) when it is not one."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} kept plan")
        splits = doc["splits"]
        if not isinstance(splits, dict):
            raise TypeError("splits: not a mapping")
        until = doc.get("until_s")
        plan = cls(
            intersection=str(doc["intersection"]),
            command_id=str(doc["command_id"]),
            issued_at=float(doc["issued_at"]),
            expires_at=float(doc["expires_at"]),
            config=str(doc["config"]),
            cycle_s=float(doc["cycle_s"]),
            start_s=float(doc["start_s"]),
            from_s=float(doc["from_s"]),
            splits={str(k): float(v) for k, v in splits.items()},
            until_s=None if until is None else float(until),
        )
        numbers = [
            plan.issued_at,
            plan.expires_at,
            plan.cycle_s,
            plan.start_s,
            plan.from_s,
            *plan.splits.values(),
        ]
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError("a number is not finite")
        return plan

    def to_json(self) -> bytes:
        """The file's content."""
        return json.dumps({"version": VERSION, **asdict(self)}, indent=1, sort_keys=True).encode()


@dataclass(frozen=True)
class Loaded:
    """What :meth:`PlanKeeper.load` found: a plan to take up again, or why there is none."""

    plan: KeptPlan | None
    dropped: str | None = None  # "expired", "other_config", "invalid", "corrupt"; None: nothing dropped
    detail: str = ""


class PlanKeeper:
    """One intersection's kept coordination plan in the agent's state folder."""

    def __init__(self, folder: Path, intersection: str) -> None:
        self.path = folder / f"{intersection}{SUFFIX}"
        self.intersection = intersection

    def save(self, plan: KeptPlan) -> None:
        """Replace the kept plan atomically (mode 0600 from the first byte)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "wb") as f:
            f.write(plan.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)

    def drop(self) -> None:
        """Forget the kept plan (no file is no plan)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self.path.parent)

    def load(self, ix: IntersectionConfig, now_tb: float | None) -> Loaded:
        """The kept plan when it is still valid for ``ix`` at ``now_tb`` (the shared time base, None
        when not synchronised: validity then cannot be judged and the plan is kept).

        A plan for another config or past its validity is deleted; an unreadable file is moved to
        ``<file>.corrupt``. Never raises for the file's content.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded(None)
        except OSError as exc:
            return self._aside(f"unreadable: {exc}")
        try:
            plan = KeptPlan.from_json(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return self._aside(f"{type(exc).__name__}: {exc}")
        if plan.intersection != self.intersection:
            return self._aside(f"kept for intersection {plan.intersection!r}")
        if plan.config != config_fingerprint(ix):
            self.drop()
            return Loaded(None, "other_config", f"command {plan.command_id} was accepted for another config")
        if plan.expired(now_tb):
            self.drop()
            return Loaded(None, "expired", f"command {plan.command_id} was valid until {plan.until_s:.0f}")
        return Loaded(plan)

    def _aside(self, why: str) -> Loaded:
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.warning("%s: could not move it aside: %s", self.path, exc)
        return Loaded(None, "corrupt", f"{why}; moved to {aside.name}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
