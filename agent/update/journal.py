"""The update journal: one small JSON file, replaced atomically (write, fsync, rename, fsync the folder)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from kernel.errors import UpdateError

State = Literal["idle", "switching", "watching", "rolling_back"]


@dataclass
class Pending:
    """The update being applied or watched."""

    command_id: str
    version: int
    type: str
    previous: int
    watch_s: float
    min_success: float | None = None
    release: str | None = None
    boots: int = 0


@dataclass
class Outcome:
    """The last update's result, kept until it has been reported to the centre."""

    command_id: str
    version: int
    outcome: Literal["committed", "rolled_back", "aborted"]
    reason: str
    ts: float
    reported: bool = False


@dataclass
class Journal:
    """What survives a restart: the state machine, the highest version seen, the last outcome."""

    state: State = "idle"
    highest: int = 0
    release: str | None = None
    pending: Pending | None = None
    last: Outcome | None = None
    failed: list[int] = field(default_factory=list)

    def to_json(self) -> bytes:
        """The file's bytes."""
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Journal:
        """Parse the file; UpdateError when it is not a journal."""
        try:
            doc: dict[str, Any] = json.loads(data)
            pending = Pending(**doc["pending"]) if doc.get("pending") else None
            last = Outcome(**doc["last"]) if doc.get("last") else None
            return cls(
                state=doc["state"],
                highest=int(doc["highest"]),
                release=doc.get("release"),
                pending=pending,
                last=last,
                failed=[int(v) for v in doc.get("failed", [])],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpdateError(f"update journal is damaged: {exc}") from exc


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: after a power cut the file is either the old or the new one, whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load_journal(path: Path) -> Journal:
    """The journal at ``path``; a fresh one when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Journal()
    return Journal.from_json(data)


def save_journal(path: Path, journal: Journal) -> None:
    """Write the journal atomically."""
    write_atomic(path, journal.to_json())
