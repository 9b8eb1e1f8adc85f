"""The reference receiver's storage: the centre's ``readings`` contract on PostgreSQL or SQLite.

``readings`` has the primary key ``(site_id, seq)``; a batch is written in ONE transaction with
``INSERT ... ON CONFLICT (site_id, seq) DO NOTHING``, so a resent batch stores nothing twice.
``rejections`` records every refused batch. The columns are documented in docs/wire-protocol.md.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from kernel.errors import ConfigError, SyncError
from kernel.readings import AVAILABILITY_POINT, Priority
from sync.wire import Batch, Status, WireReading

_T = TypeVar("_T")

READING_COLUMNS = (
    "site_id", "seq", "device", "point", "ts", "value", "value_text", "value_type", "unit",
    "quality", "priority", "clock", "meta", "batch_id", "received_at", "receiver",
)  # fmt: skip

_SQLITE_DDL = [
    """CREATE TABLE IF NOT EXISTS readings (
        site_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        device TEXT NOT NULL,
        point TEXT NOT NULL,
        ts REAL NOT NULL,
        value REAL,
        value_text TEXT,
        value_type TEXT NOT NULL,
        unit TEXT NOT NULL,
        quality INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        clock INTEGER NOT NULL,
        meta TEXT,
        batch_id TEXT NOT NULL,
        received_at REAL NOT NULL,
        receiver TEXT NOT NULL,
        PRIMARY KEY (site_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS readings_by_point ON readings (site_id, device, point, ts)",
    """CREATE TABLE IF NOT EXISTS rejections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        site_id TEXT NOT NULL,
        batch_id TEXT,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        topic TEXT NOT NULL,
        size INTEGER NOT NULL,
        received_at REAL NOT NULL,
        receiver TEXT NOT NULL
    )""",
]

# Migration step "observe" (issue 12): the latest status of each site and its devices' availability
# events, kept apart from the readings contract so other steps can be added beside it.
_OBSERVE_DDL = [
    """CREATE TABLE IF NOT EXISTS site_status (
        site_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        ts DOUBLE PRECISION,
        depth BIGINT,
        in_flight INTEGER NOT NULL,
        rejected_batches INTEGER NOT NULL,
        last_rejection TEXT,
        agent_version TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        receiver TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS device_events (
        site_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        device TEXT NOT NULL,
        state TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        detail TEXT,
        received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (site_id, seq)
    )""",
]
_STATUS_COLUMNS = (
    "site_id", "state", "ts", "depth", "in_flight", "rejected_batches", "last_rejection", "agent_version",
    "received_at", "receiver",
)  # fmt: skip
_STATUS_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in _STATUS_COLUMNS[1:])

_DDL_LOCK_KEY = 0x6B6265_5244  # "kbe" "RD": advisory lock id for schema creation

_PG_DDL = [
    """CREATE TABLE IF NOT EXISTS readings (
        site_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        device TEXT NOT NULL,
        point TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        value DOUBLE PRECISION,
        value_text TEXT,
        value_type TEXT NOT NULL,
        unit TEXT NOT NULL,
        quality SMALLINT NOT NULL,
        priority SMALLINT NOT NULL,
        clock SMALLINT NOT NULL,
        meta JSONB,
        batch_id TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        receiver TEXT NOT NULL,
        PRIMARY KEY (site_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS readings_by_point ON readings (site_id, device, point, ts)",
    """CREATE TABLE IF NOT EXISTS rejections (
        id BIGSERIAL PRIMARY KEY,
        site_id TEXT NOT NULL,
        batch_id TEXT,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        topic TEXT NOT NULL,
        size INTEGER NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        receiver TEXT NOT NULL
    )""",
]


def split_value(value: Any) -> tuple[float | None, str | None, str]:
    """(numeric column, text column, type tag) for a reading value; bools are 0/1 with tag 'bool'."""
    if value is None:
        return None, None, "null"
    if isinstance(value, bool):
        return float(value), None, "bool"
    if isinstance(value, int):
        # Integers past 2**53 would lose digits in a double: the exact text goes beside it.
        return float(value), (str(value) if abs(value) > 2**53 else None), "int"
    if isinstance(value, float):
        return value, None, "float"
    return None, str(value), "str"


def join_value(value: float | None, text: str | None, kind: str) -> Any:
    """The reading value back from its columns."""
    if kind == "null":
        return None
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(text) if text is not None else int(value or 0)
    if kind == "float":
        return value
    return text


def _rows(batch: Batch, receiver: str, now: float) -> list[tuple[Any, ...]]:
    out = []
    for r in batch.readings:
        num, text, kind = split_value(r.value)
        out.append(_row(batch, r, num, text, kind, receiver, now))
    return out


def _row(
    batch: Batch, r: WireReading, num: float | None, text: str | None, kind: str, receiver: str, now: float
) -> tuple[Any, ...]:
    meta = json.dumps(r.meta, ensure_ascii=False) if r.meta else None
    return (
        batch.site_id, r.seq, r.device, r.point, r.ts, num, text, kind, r.unit,
        int(r.quality), int(r.priority), int(r.clock), meta, batch.batch_id, now, receiver,
    )  # fmt: skip


class ReceiverDB(Protocol):
    """What the receiver needs from its database."""

    def store_batch(self, batch: Batch, receiver: str) -> tuple[int, int]:
        """Persist a batch in one transaction; return (newly stored, duplicates)."""
        ...

    def record_rejection(
        self, site_id: str, batch_id: str | None, reason: str, detail: str, topic: str, size: int, receiver: str
    ) -> None:
        """Record a refused batch."""
        ...

    def record_status(self, status: Status, receiver: str) -> None:
        """Keep the latest status a site published."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


def _status_row(status: Status, receiver: str) -> tuple[Any, ...]:
    return (
        status.site_id, status.state, status.ts, status.buffer.depth if status.buffer else None, status.in_flight,
        status.rejected_batches, status.last_rejection, status.agent_version, time.time(), receiver,
    )  # fmt: skip


def _event_rows(batch: Batch, now: float) -> list[tuple[Any, ...]]:
    return [
        (batch.site_id, r.seq, r.device, str(r.value), r.ts, json.dumps(r.meta) if r.meta else None, now)
        for r in batch.readings
        if r.point == AVAILABILITY_POINT and r.priority == Priority.EVENT
    ]


class SqliteReceiverDB:
    """``sqlite:///path``: one connection, WAL, one transaction per batch."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for ddl in _SQLITE_DDL + _OBSERVE_DDL:
            self._db.execute(ddl)

    def store_batch(self, batch: Batch, receiver: str) -> tuple[int, int]:
        """Persist a batch in one transaction; return (newly stored, duplicates)."""
        rows = _rows(batch, receiver, time.time())
        marks = ", ".join("?" * len(READING_COLUMNS))
        sql = (
            f"INSERT INTO readings ({', '.join(READING_COLUMNS)}) VALUES ({marks}) "  # noqa: S608 - constant columns
            "ON CONFLICT (site_id, seq) DO NOTHING"
        )
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany(sql, rows)
                stored = self._db.total_changes - before
                self._db.executemany(
                    "INSERT INTO device_events (site_id, seq, device, state, ts, detail, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, seq) DO NOTHING",
                    _event_rows(batch, rows[0][14] if rows else time.time()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return stored, len(rows) - stored

    def record_rejection(
        self, site_id: str, batch_id: str | None, reason: str, detail: str, topic: str, size: int, receiver: str
    ) -> None:
        """Record a refused batch."""
        with self._lock:
            self._db.execute(
                "INSERT INTO rejections (site_id, batch_id, reason, detail, topic, size, received_at, receiver) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (site_id, batch_id, reason, detail, topic, size, time.time(), receiver),
            )

    def record_status(self, status: Status, receiver: str) -> None:
        """Keep the latest status a site published."""
        marks = ", ".join("?" * len(_STATUS_COLUMNS))
        with self._lock:
            self._db.execute(
                f"INSERT INTO site_status ({', '.join(_STATUS_COLUMNS)}) VALUES ({marks}) "  # noqa: S608 - constant
                f"ON CONFLICT (site_id) DO UPDATE SET {_STATUS_UPDATE}",
                _status_row(status, receiver),
            )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


class PostgresReceiverDB:
    """``postgresql://...`` (psycopg 3): per batch, COPY into a temporary table, then one
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, all in one transaction (COPY is about three
    times faster than ``unnest`` arrays or ``executemany`` for 2000 rows here)."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SyncError("postgresql:// needs psycopg: pip install 'kinhbac-edge[receiver]'") from exc
        self._psycopg = psycopg
        self._url = url
        self._lock = threading.Lock()
        cols = ", ".join(READING_COLUMNS)
        self._copy = f"COPY kbe_rx_incoming ({cols}) FROM STDIN"
        self._insert = (
            f"INSERT INTO readings ({cols}) SELECT {cols} FROM kbe_rx_incoming "  # noqa: S608 - constant
            "ON CONFLICT (site_id, seq) DO NOTHING"
        )
        self._conn = self._connect()
        self.reconnects = 0

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self._url, autocommit=True)
        except psycopg.Error as exc:
            raise SyncError(f"cannot connect to the receiver database: {exc}") from exc
        with conn.transaction():
            # Receivers of one group start together; serialise their CREATE ... IF NOT EXISTS, which
            # PostgreSQL does not make race-free on its own.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
            for ddl in _PG_DDL + _OBSERVE_DDL:
                conn.execute(ddl)
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS kbe_rx_incoming (LIKE readings) ON COMMIT DELETE ROWS")
        return conn

    def store_batch(self, batch: Batch, receiver: str) -> tuple[int, int]:
        """Persist a batch in one transaction; return (newly stored, duplicates).

        A broken connection (database restarted, session killed) is reopened once and the batch
        written again; a commit that did land before the break only turns into duplicates.
        """
        rows = _rows(batch, receiver, time.time())
        stored = self._reconnecting(lambda: self._write(rows))
        return stored, len(rows) - stored

    def _reconnecting(self, fn: Callable[[], _T]) -> _T:
        with self._lock:
            try:
                return fn()
            except self._psycopg.OperationalError:
                if not self._conn.closed and not self._conn.broken:
                    raise
                self._conn.close()
                self._conn = self._connect()
                self.reconnects += 1
                return fn()

    def _write(self, rows: list[tuple[Any, ...]]) -> int:
        with self._conn.transaction(), self._conn.cursor() as cur:
            with cur.copy(self._copy) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(self._insert)
            stored = max(cur.rowcount, 0)
            cur.execute(
                "INSERT INTO device_events (site_id, seq, device, state, ts, detail, received_at) "
                "SELECT site_id, seq, device, value_text, ts, meta::text, received_at FROM kbe_rx_incoming "
                "WHERE point = %s AND priority = %s ON CONFLICT (site_id, seq) DO NOTHING",
                (AVAILABILITY_POINT, int(Priority.EVENT)),
            )
            return stored

    def record_rejection(
        self, site_id: str, batch_id: str | None, reason: str, detail: str, topic: str, size: int, receiver: str
    ) -> None:
        """Record a refused batch."""
        self._reconnecting(
            lambda: self._conn.execute(
                "INSERT INTO rejections (site_id, batch_id, reason, detail, topic, size, received_at, receiver) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (site_id, batch_id, reason, detail, topic, size, time.time(), receiver),
            )
        )

    def record_status(self, status: Status, receiver: str) -> None:
        """Keep the latest status a site published."""
        marks = ", ".join(["%s"] * len(_STATUS_COLUMNS))
        self._reconnecting(
            lambda: self._conn.execute(
                f"INSERT INTO site_status ({', '.join(_STATUS_COLUMNS)}) VALUES ({marks}) "  # noqa: S608 - constant
                f"ON CONFLICT (site_id) DO UPDATE SET {_STATUS_UPDATE}",
                _status_row(status, receiver),
            )
        )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def open_db(url: str) -> ReceiverDB:
    """Open ``postgresql://...`` or ``sqlite:///path`` (``sqlite:////abs/path`` for an absolute path)."""
    scheme = urlparse(url).scheme
    if scheme in ("postgresql", "postgres"):
        return PostgresReceiverDB(url)
    if scheme == "sqlite":
        rest = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not rest:
            raise ConfigError("--db", [f"--db: {url!r} is not sqlite:///relative.db or sqlite:////abs/path.db"])
        return SqliteReceiverDB(Path(rest))
    raise ConfigError("--db", [f"--db: {url!r} is neither postgresql://... nor sqlite:///path"])
