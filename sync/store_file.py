"""Whether a path may hold the agent's store: a check shared by the config and the store (no pydantic)."""

from __future__ import annotations

from pathlib import Path

SQLITE_MAGIC = b"SQLite format 3\x00"


def foreign_store_problem(path: Path) -> str | None:
    """None when ``path`` is absent, empty, an SQLite file or a store this agent made; else why it is refused.

    A file that is not SQLite and has no ``<path>.seq`` beside it is someone else's file: the agent
    must refuse it, never move it aside as a "corrupt store".
    """
    try:
        if path.is_dir():
            return f"{str(path)!r} is a directory, not a store file"
        if not path.exists():
            return None
        if not path.is_file():
            return f"{str(path)!r} is not a regular file"
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        return f"{str(path)!r} cannot be read: {exc.strerror or exc}"
    if not head or head == SQLITE_MAGIC or path.with_name(path.name + ".seq").exists():
        return None
    return f"{str(path)!r} exists and is not an agent store (not SQLite); refusing to use or move it"
