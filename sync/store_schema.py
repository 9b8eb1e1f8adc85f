"""The store's SQLite schema and its versioned migrations (index i brings version i to i + 1).

Version 1 kept one row per reading (``readings``, ``rejected``). Version 2 keeps one row per poll
(``polls``, ``rejected_polls``): a seq range and its readings' wire JSON, compressed
(:mod:`sync.rowcodec`), and
the last seq handed out in ``counters`` (``last_seq``) instead of ``sqlite_sequence``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator

from kernel.readings import ClockQuality, Priority, Quality, Reading
from sync.rowcodec import ROW_MAX, NewRow, build_rows, encode_tails
from sync.wire_batch import VT_BOOL, VT_FLOAT

_V1_FIELDS = (
    "priority INTEGER NOT NULL, ts REAL NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL, value, "
    "vtype INTEGER NOT NULL, unit TEXT NOT NULL, quality INTEGER NOT NULL, clock INTEGER NOT NULL, meta TEXT"
)
V1_COLUMNS = "seq, priority, ts, device, point, value, vtype, unit, quality, clock, meta"

POLL_COLUMNS = "seq_first, seq_last, priority, ts, n, body"
_POLL_FIELDS = (
    "seq_first INTEGER PRIMARY KEY, seq_last INTEGER NOT NULL, priority INTEGER NOT NULL, ts REAL, "
    "n INTEGER NOT NULL CHECK (n = seq_last - seq_first + 1), body BLOB NOT NULL"
)
_REJECTION_FIELDS = "batch_id TEXT NOT NULL, reason TEXT NOT NULL, rejected_at REAL NOT NULL"

# Every SQL statement of the migrations, named for what it does. They live here, not in the
# functions, so that mutation testing (docs/testing.md) does not count their letter case, which
# SQLite ignores; the tests check what each statement does.

# Version 1: one row per reading.
_CREATE_META = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_CREATE_READINGS = f"CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, {_V1_FIELDS})"
_INDEX_READINGS_BY_PRIORITY = "CREATE INDEX readings_by_priority ON readings (priority, seq)"
_CREATE_REJECTED = f"CREATE TABLE rejected (seq INTEGER PRIMARY KEY, {_V1_FIELDS}, {_REJECTION_FIELDS})"
_INDEX_REJECTED_BY_BATCH = "CREATE INDEX rejected_by_batch ON rejected (batch_id)"
_CREATE_COUNTERS = "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"

# Version 2: one row per poll, its readings moved over from version 1's tables.
_CREATE_POLLS = f"CREATE TABLE polls ({_POLL_FIELDS})"
_INDEX_POLLS_BY_PRIORITY = "CREATE INDEX polls_by_priority ON polls (priority, seq_last)"
_CREATE_REJECTED_POLLS = f"CREATE TABLE rejected_polls ({_POLL_FIELDS}, {_REJECTION_FIELDS})"
_INDEX_REJECTED_POLLS_BY_BATCH = "CREATE INDEX rejected_polls_by_batch ON rejected_polls (batch_id)"
_V1_LAST_SEQ = "SELECT seq FROM sqlite_sequence WHERE name = 'readings'"
_SET_LAST_SEQ = "INSERT INTO counters (name, value) VALUES ('last_seq', ?)"
_V1_READINGS = f"SELECT {V1_COLUMNS} FROM readings ORDER BY seq"
_V1_REJECTED = f"SELECT {V1_COLUMNS}, batch_id, reason, rejected_at FROM rejected ORDER BY seq"
_INSERT_POLL = f"INSERT INTO polls ({POLL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_REJECTED_POLL = (
    f"INSERT INTO rejected_polls ({POLL_COLUMNS}, batch_id, reason, rejected_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DROP_READINGS = "DROP TABLE readings"
_DROP_REJECTED = "DROP TABLE rejected"


def _m001_initial(db: sqlite3.Connection) -> None:
    db.execute(_CREATE_META)
    db.execute(_CREATE_READINGS)
    db.execute(_INDEX_READINGS_BY_PRIORITY)
    db.execute(_CREATE_REJECTED)
    db.execute(_INDEX_REJECTED_BY_BATCH)
    db.execute(_CREATE_COUNTERS)


def _v1_reading(row: tuple) -> tuple[int, Reading]:
    seq, priority, ts, device, point, value, vtype, unit, quality, clock, meta = row
    if vtype == VT_BOOL:
        value = bool(value)
    elif vtype == VT_FLOAT and value is not None:
        value = float(value)
    return seq, Reading(
        device, point, value, ts, unit, Quality(quality), Priority(priority), ClockQuality(clock),
        json.loads(meta) if meta else None,
    )  # fmt: skip


def _runs(rows: Iterable[tuple]) -> Iterator[tuple[tuple, list[tuple[int, Reading]]]]:
    """v1 rows in seq order (their columns past the reading's are the key) as runs of consecutive
    seqs with the same priority and key, at most ``ROW_MAX`` long."""
    run: list[tuple[int, Reading]] = []
    run_key: tuple = ()
    for row in rows:
        seq, r = _v1_reading(row[:11])
        k = (row[1], *row[11:])
        if run and (seq != run[-1][0] + 1 or k != run_key or len(run) == ROW_MAX):
            yield run_key, run
            run = []
        run_key = k
        run.append((seq, r))
    if run:
        yield run_key, run


def _v2_rows(run: list[tuple[int, Reading]]) -> list[NewRow]:
    readings = [r for _, r in run]
    return build_rows(run[0][0], readings, encode_tails(readings))


def _m002_poll_rows(db: sqlite3.Connection) -> None:
    db.execute(_CREATE_POLLS)
    db.execute(_INDEX_POLLS_BY_PRIORITY)
    db.execute(_CREATE_REJECTED_POLLS)
    db.execute(_INDEX_REJECTED_POLLS_BY_BATCH)
    row = db.execute(_V1_LAST_SEQ).fetchone()
    db.execute(_SET_LAST_SEQ, (int(row[0]) if row else 0,))
    for _, run in _runs(db.execute(_V1_READINGS)):
        db.executemany(_INSERT_POLL, _v2_rows(run))
    for (_, batch_id, reason, at), run in _runs(db.execute(_V1_REJECTED)):
        db.executemany(_INSERT_REJECTED_POLL, [(*row, batch_id, reason, at) for row in _v2_rows(run)])
    db.execute(_DROP_READINGS)
    db.execute(_DROP_REJECTED)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial, _m002_poll_rows]
SCHEMA_VERSION = len(MIGRATIONS)
