"""What must survive a restart: overrides (until they expire), profile switches, learned meter calibration.

Kept in one small JSON file written atomically (temporary file, fsync, rename), so a power cut leaves
either the old or the new state, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger("kbe.lighting")


@dataclass(frozen=True)
class Override:
    """A remote override of one circuit until wall time ``until`` (UTC seconds)."""

    level: int
    until: float
    set_at: float
    command_id: str = ""


@dataclass
class LightingState:
    """Overrides per circuit and the profile chosen remotely per group."""

    path: Path | None = None
    overrides: dict[str, Override] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> LightingState:
        """Read the state file; a missing one is an empty state, a corrupt one is set aside and logged."""
        state = cls(path)
        if path is None or not path.exists():
            return state
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state.overrides = {k: Override(**v) for k, v in data.get("overrides", {}).items()}
            state.profiles = {str(k): str(v) for k, v in data.get("profiles", {}).items()}
            state.calibration = {str(k): float(v) for k, v in data.get("calibration", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            aside = path.with_suffix(path.suffix + ".corrupt")
            log.error(
                "lighting state %s unreadable (%s); moved to %s, running the local schedule", path, exc, aside
            )
            try:
                path.replace(aside)
            except OSError:
                pass
            return cls(path)
        return state

    def save(self) -> None:
        """Write the state atomically (no-op without a path)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        body = {
            "version": 1,
            "overrides": {k: asdict(v) for k, v in sorted(self.overrides.items())},
            "profiles": dict(sorted(self.profiles.items())),
            "calibration": dict(sorted(self.calibration.items())),
        }
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def expire(self, now: float) -> dict[str, Override]:
        """Drop overrides whose time is up; return them (and save when any went)."""
        gone = {k: v for k, v in self.overrides.items() if v.until <= now}
        if gone:
            for k in gone:
                del self.overrides[k]
            self.save()
        return gone


def state_file(state_path: Path | None, store_path: Path | None) -> Path | None:
    """Where the lighting state is kept: the configured ``state_path``, else ``lighting-state.json``
    beside the store (the agent's state directory, writable under the systemd unit), else nowhere."""
    if state_path is not None:
        return state_path
    return store_path.parent / "lighting-state.json" if store_path is not None else None
