"""Reading the results of a run: the receiver's ``readings`` table, the agent's store, /proc figures."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.expect import Row
from sync.store import last_issued_seq, rejected_reasons, waiting_readings


def _join(value: float | None, text: str | None, kind: str) -> Any:
    from sync.receiver_db import join_value

    return join_value(value, text, kind)


_ROWS = (
    "SELECT seq, device, point, value, value_text, value_type, ts, quality, priority, received_at "
    "FROM readings WHERE site_id = {p} ORDER BY seq"
)
_COUNT = "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM readings WHERE site_id = {p}"


def _query(db_url: str, sql: str, site_id: str) -> list[tuple[Any, ...]]:
    """Run one query on the receiver's database; a database or table not created yet gives no rows."""
    if db_url.startswith("sqlite:///"):
        path = db_url.removeprefix("sqlite:///")
        if not Path(path).exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            try:
                return db.execute(sql.format(p="?"), (site_id,)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
    import psycopg

    with psycopg.connect(db_url) as pg:
        try:
            return pg.execute(sql.format(p="%s"), (site_id,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def receiver_rows(db_url: str, site_id: str) -> list[Row]:
    """Every reading the receiver stored for ``site_id`` (SQLite ``sqlite:///path`` or PostgreSQL)."""
    raw = _query(db_url, _ROWS, site_id)
    return [
        Row(int(s), d, p, _join(v, t, k), float(ts), int(q), int(pr), float(rx))
        for s, d, p, v, t, k, ts, q, pr, rx in raw
    ]


def receiver_count(db_url: str, site_id: str) -> tuple[int, int]:
    """(rows, highest seq) the receiver holds for ``site_id``."""
    raw = _query(db_url, _COUNT, site_id)
    return (int(raw[0][0]), int(raw[0][1])) if raw else (0, 0)


@dataclass(frozen=True)
class StoreState:
    """The agent's store as seen from outside: the last seq it handed out and how many wait for an ack."""

    last_seq: int
    depth: int
    rejected: dict[int, str] = field(default_factory=dict)  # seq -> reason the centre refused it


def store_state(path: Path) -> StoreState:
    """Read the agent's store read-only (WAL mode allows it while the agent runs)."""
    if not path.exists():
        return StoreState(0, 0)
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return StoreState(last_issued_seq(db), waiting_readings(db), rejected_reasons(db))


_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (from /proc/PID/stat), None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat)


def proc_rss_kib(pid: int) -> int | None:
    """Resident set size in KiB (VmRSS of /proc/PID/status), None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


_LAST_GOOD = (
    "SELECT device, MAX(ts) FROM readings WHERE site_id = {p} AND quality = 0 AND priority = 2 "
    "GROUP BY device"
)


def receiver_last_good(db_url: str, site_id: str) -> dict[str, float]:
    """device -> timestamp of its newest good telemetry reading at the receiver."""
    return {str(d): float(ts) for d, ts in _query(db_url, _LAST_GOOD, site_id)}
