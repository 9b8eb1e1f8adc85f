"""The reference receiver's storage: the centre's ``readings`` contract on PostgreSQL or SQLite.

``readings`` has the primary key ``(site_id, seq)``; a batch is written in ONE transaction with
``INSERT ... ON CONFLICT (site_id, seq) DO NOTHING``, so a resent batch stores nothing twice.
``rejections`` records every refused batch. The columns are documented in docs/wire-protocol.md.
Readings are indexed by their series key (:mod:`sync.receiver_series`) and time, ``readings_by_series
(series, ts)``; a database made before the key existed is migrated once, when a receiver starts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlparse

from kernel.errors import ConfigError, SyncError
from kernel.readings import AVAILABILITY_POINT, Priority
from sync.receiver_series import PG_FUNCTION, SeriesCache, pg_series_sql, register_sqlite
from sync.wire import CommandReply, Status

if TYPE_CHECKING:  # msgspec is the receiver's extra; the operator's tools read this module too
    from sync.receiver_decode import BatchFields

_T = TypeVar("_T")


class UnstorableError(SyncError):
    """The database refused a batch's values, not its connection: writing it again cannot succeed.

    The schema refuses what the columns cannot hold (docs/wire-protocol.md), so this is the last line
    of defence: the receiver answers such a batch with a ``unstorable`` rejection instead of leaving
    it unacknowledged, which would make the site resend it forever.
    """


# Raised by Python while turning values into column values (float() of a huge int, a lone surrogate).
_VALUE_ERRORS: tuple[type[Exception], ...] = (OverflowError, UnicodeError)
# A NOT NULL column given NULL (SQLite stores a NaN as NULL), a value SQLite cannot bind.
_SQLITE_VALUE_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, sqlite3.DataError, *_VALUE_ERRORS)

READING_COLUMNS = (
    "site_id", "seq", "device", "point", "ts", "value", "value_text", "value_type", "unit",
    "quality", "priority", "clock", "meta", "batch_id", "received_at", "receiver", "series",
)  # fmt: skip

_SQLITE_READINGS = """CREATE TABLE IF NOT EXISTS readings (
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
        series INTEGER NOT NULL,
        PRIMARY KEY (site_id, seq)
    )"""

_SQLITE_DDL = [
    _SQLITE_READINGS,
    "CREATE INDEX IF NOT EXISTS readings_by_series ON readings (series, ts)",
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

# Their own migration step (issues 11 and 12): each site's latest status, the command replies as
# received, and the devices' availability events, kept apart from the readings contract.
_STATUS_COLUMNS = (
    "site_id", "state", "ts", "received_at", "config_version", "update_state", "release", "healthy",
    "readings_per_s", "buffer_depth", "in_flight", "rejected_batches", "last_rejection", "agent_version", "doc",
    "receiver",
)  # fmt: skip
_REPLY_COLUMNS = ("site_id", "command_id", "outcome", "phase", "version", "reason", "ts", "received_at")

_STATUS_DDL = [
    """CREATE TABLE IF NOT EXISTS site_status (
        site_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        ts DOUBLE PRECISION,
        received_at DOUBLE PRECISION NOT NULL,
        config_version INTEGER,
        update_state TEXT NOT NULL,
        release TEXT,
        healthy BOOLEAN,
        readings_per_s DOUBLE PRECISION,
        buffer_depth BIGINT,
        in_flight INTEGER,
        rejected_batches BIGINT NOT NULL,
        last_rejection TEXT,
        agent_version TEXT NOT NULL,
        doc TEXT NOT NULL,
        receiver TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS command_replies (
        site_id TEXT NOT NULL,
        command_id TEXT NOT NULL,
        outcome TEXT NOT NULL,
        phase TEXT NOT NULL,
        version INTEGER,
        reason TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (site_id, command_id, phase, ts)
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


def _status_row(status: Status, now: float, receiver: str) -> tuple[Any, ...]:
    buf = status.buffer
    return (
        status.site_id, status.state, status.ts, now, status.config_version, status.update_state,
        status.release, status.healthy, status.readings_per_s, buf.depth if buf else None, status.in_flight,
        status.rejected_batches, status.last_rejection, status.agent_version, status.model_dump_json(), receiver,
    )  # fmt: skip


def _reply_row(reply: CommandReply, now: float) -> tuple[Any, ...]:
    return (reply.site_id, reply.command_id, reply.outcome, reply.phase, reply.version, reply.reason[:2000],
            reply.ts, now)  # fmt: skip


# The status upsert for each placeholder (``?`` SQLite, ``%s`` PostgreSQL). An offline status (the last
# will) carries no version or health: the last known ones are kept.
_STATUS_KEEP = {"config_version", "release", "healthy", "readings_per_s", "buffer_depth"}
_STATUS_UPDATES = ", ".join(
    f"{c} = COALESCE(excluded.{c}, site_status.{c})" if c in _STATUS_KEEP
    else f"{c} = CASE WHEN excluded.{c} = '' THEN site_status.{c} ELSE excluded.{c} END" if c == "update_state"
    else f"{c} = excluded.{c}"
    for c in _STATUS_COLUMNS[1:]
)  # fmt: skip
# An older status (a retained one delivered late) never overwrites a newer one, except the will of the
# connection the stored status went out on (or of a later one): its ts is the connection's start, older
# than that connection's online statuses, and it says the connection is gone.
_UPSERT_STATUS = (
    f"INSERT INTO site_status ({', '.join(_STATUS_COLUMNS)}) VALUES ({{marks}}) "  # noqa: S608 - constant columns
    f"ON CONFLICT (site_id) DO UPDATE SET {_STATUS_UPDATES} "
    "WHERE site_status.ts IS NULL OR excluded.ts IS NULL OR excluded.ts >= site_status.ts "
    "OR (excluded.state = 'offline' AND {new_conn} >= {old_conn})"
)
_SQLITE_UPSERT_STATUS = _UPSERT_STATUS.format(
    marks=", ".join("?" * len(_STATUS_COLUMNS)),
    new_conn="json_extract(excluded.doc, '$.connected_at')",
    old_conn="json_extract(site_status.doc, '$.connected_at')",
)
_PG_UPSERT_STATUS = _UPSERT_STATUS.format(
    marks=", ".join(["%s"] * len(_STATUS_COLUMNS)),
    new_conn="CAST(CAST(excluded.doc AS jsonb) ->> 'connected_at' AS DOUBLE PRECISION)",
    old_conn="CAST(CAST(site_status.doc AS jsonb) ->> 'connected_at' AS DOUBLE PRECISION)",
)
_INSERT_REPLY = f"INSERT INTO command_replies ({', '.join(_REPLY_COLUMNS)}) VALUES ({{}}) ON CONFLICT DO NOTHING"  # noqa: S608
_SQLITE_INSERT_REPLY = _INSERT_REPLY.format(", ".join("?" * len(_REPLY_COLUMNS)))
_PG_INSERT_REPLY = _INSERT_REPLY.format(", ".join(["%s"] * len(_REPLY_COLUMNS)))

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
        series BIGINT NOT NULL,
        PRIMARY KEY (site_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS readings_by_series ON readings (series, ts)",
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


# The binary COPY format of each READING_COLUMNS column, as _PG_DDL declares it.
_PG_READING_TYPES = (
    "text", "int8", "text", "text", "float8", "float8", "text", "text", "text",
    "int2", "int2", "int2", "jsonb", "text", "float8", "text", "int8",
)  # fmt: skip


# Every statement the receiver runs is a named module-level constant (mutation testing leaves those
# alone, docs/testing.md); the placeholders are ``?`` for SQLite and ``%s`` for PostgreSQL.
_BEGIN_WRITE = "BEGIN IMMEDIATE"
_COMMIT = "COMMIT"
_ROLLBACK = "ROLLBACK"
_PRAGMA_WAL = "PRAGMA journal_mode=WAL"
_PRAGMA_SYNC_FULL = "PRAGMA synchronous=FULL"

_INSERT_READINGS = (
    f"INSERT INTO readings ({', '.join(READING_COLUMNS)}) VALUES ({', '.join('?' * len(READING_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (site_id, seq) DO NOTHING"
)
_INSERT_EVENTS = (
    "INSERT INTO device_events (site_id, seq, device, state, ts, detail, received_at) "
    "VALUES ({marks}) ON CONFLICT (site_id, seq) DO NOTHING"
)
_SQLITE_INSERT_EVENTS = _INSERT_EVENTS.format(marks=", ".join("?" * 7))
_PG_INSERT_EVENTS = _INSERT_EVENTS.format(marks=", ".join(["%s"] * 7))
_INSERT_REJECTION = (
    "INSERT INTO rejections (site_id, batch_id, reason, detail, topic, size, received_at, receiver) "
    "VALUES ({marks})"
)
_SQLITE_INSERT_REJECTION = _INSERT_REJECTION.format(marks=", ".join("?" * 8))
_PG_INSERT_REJECTION = _INSERT_REJECTION.format(marks=", ".join(["%s"] * 8))

# SQLite's migration to the series key (_sqlite_add_series).
_SQLITE_READING_COLUMNS = "PRAGMA table_info(readings)"
_SQLITE_SET_OLD_ASIDE = "ALTER TABLE readings RENAME TO kbe_readings_before_series"
_SQLITE_COPY_OLD = (
    f"INSERT INTO readings ({', '.join(READING_COLUMNS[:-1])}, series) "  # noqa: S608 - constant columns
    f"SELECT {', '.join(READING_COLUMNS[:-1])}, kbe_series(site_id, device, point) FROM kbe_readings_before_series"
)
_SQLITE_DROP_OLD = "DROP TABLE kbe_readings_before_series"

# PostgreSQL's start-up (PostgresReceiverDB._connect) and migration to the series key (_pg_add_series).
_PG_LOCK_DDL = "SELECT pg_advisory_xact_lock(%s)"
_PG_SERIES_FUNCTION = "SELECT to_regprocedure('kbe_series(text,text,text)')"
_PG_READINGS_TABLE = "SELECT to_regclass('readings')"
_PG_HAS_SERIES = (
    "SELECT 1 FROM pg_attribute WHERE attrelid = 'readings'::regclass AND attname = 'series' AND NOT attisdropped"
)
_PG_OLD_INDEX = (
    "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE i.indrelid = 'readings'::regclass AND c.relname = 'readings_by_point'"
)
_PG_DROP_INDEX = "DROP INDEX {}"  # a regclass's text: quoted and qualified by PostgreSQL
_PG_ADD_SERIES = "ALTER TABLE readings ADD COLUMN series BIGINT"
# kbe_series' body written out: a call per row of a SQL function it cannot inline costs twice as much
_PG_FILL_SERIES = (
    f"ALTER TABLE readings ALTER COLUMN series TYPE BIGINT USING {pg_series_sql('site_id', 'device', 'point')}, "
    "ALTER COLUMN series SET NOT NULL"
)
_PG_INCOMING = "CREATE TEMP TABLE IF NOT EXISTS kbe_rx_incoming (LIKE readings) ON COMMIT DELETE ROWS"
_PG_EMPTY_INCOMING = "TRUNCATE kbe_rx_incoming"
_PG_COPY_DIRECT = f"COPY readings ({', '.join(READING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_COPY_INCOMING = f"COPY kbe_rx_incoming ({', '.join(READING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_INSERT_INCOMING = (
    f"INSERT INTO readings ({', '.join(READING_COLUMNS)}) "  # noqa: S608 - constant columns
    f"SELECT {', '.join(READING_COLUMNS)} FROM kbe_rx_incoming ON CONFLICT (site_id, seq) DO NOTHING"
)


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


def _rows(batch: BatchFields, receiver: str, now: float, series: SeriesCache) -> list[tuple[Any, ...]]:
    site, bid = batch.site_id, batch.batch_id
    devices, add = series.site(site), series.add
    out: list[tuple[Any, ...]] = []
    append = out.append
    for r in batch.readings:
        num, text, kind = split_value(r.value)
        meta = json.dumps(r.meta, ensure_ascii=False) if r.meta else None
        try:
            sid = devices[r.device][r.point]
        except KeyError:
            sid = add(site, r.device, r.point)
        append((
            site, r.seq, r.device, r.point, r.ts, num, text, kind, r.unit,
            int(r.quality), int(r.priority), int(r.clock), meta, bid, now, receiver, sid,
        ))  # fmt: skip
    return out


class ReceiverDB(Protocol):
    """What the receiver needs from its database."""

    def store_batch(self, batch: BatchFields, receiver: str) -> tuple[int, int]:
        """Persist a batch in one transaction; return (newly stored, duplicates)."""
        ...

    def store_batches(self, batches: Sequence[BatchFields], receiver: str) -> list[tuple[int, int]]:
        """Persist several batches in ONE transaction; (newly stored, duplicates) of each, in order.

        Raises :class:`UnstorableError` (nothing written) when the database refuses a value.
        """
        ...

    def record_rejection(
        self, site_id: str, batch_id: str | None, reason: str, detail: str, topic: str, size: int, receiver: str
    ) -> None:
        """Record a refused batch."""
        ...

    def record_status(self, status: Status, receiver: str = "") -> None:
        """Keep a site's latest status (the newest by its own timestamp)."""
        ...

    def record_reply(self, reply: CommandReply) -> None:
        """Keep a command reply (the same reply twice is kept once)."""
        ...

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query without parameters (the centre tools' overview)."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


def _event_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The device availability events among a batch's reading rows, as ``device_events`` rows."""
    return [
        (row[0], row[1], row[2], str(join_value(row[5], row[6], row[7])), row[4], row[12], row[14])
        for row in rows
        if row[3] == AVAILABILITY_POINT and row[10] == Priority.EVENT
    ]


def _sqlite_add_series(db: sqlite3.Connection) -> None:
    """A ``readings`` table made before the series key is rebuilt with it, in the caller's transaction.

    SQLite cannot add a NOT NULL column without a default, so the old table is renamed, the new one
    created and filled from it (every row, its series computed), and the old one (with its
    ``readings_by_point`` index) dropped.
    """
    columns = {row[1] for row in db.execute(_SQLITE_READING_COLUMNS)}
    if not columns or "series" in columns:
        return
    db.execute(_SQLITE_SET_OLD_ASIDE)
    db.execute(_SQLITE_READINGS)
    db.execute(_SQLITE_COPY_OLD)
    db.execute(_SQLITE_DROP_OLD)


class SqliteReceiverDB:
    """``sqlite:///path``: one connection, WAL, one transaction per batch.

    ``kbe_series(site_id, device, point)`` is registered on the connection (:mod:`sync.receiver_series`).
    """

    def __init__(self, path: Path, series: SeriesCache | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._series = series or SeriesCache()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        register_sqlite(self._db)
        self._db.execute(_PRAGMA_WAL)
        self._db.execute(_PRAGMA_SYNC_FULL)
        self._db.execute(_BEGIN_WRITE)  # receivers starting together: one makes the schema
        try:
            _sqlite_add_series(self._db)
            for ddl in _SQLITE_DDL + _STATUS_DDL:
                self._db.execute(ddl)
            self._db.execute(_COMMIT)
        except BaseException:
            self._db.execute(_ROLLBACK)
            raise

    def store_batch(self, batch: BatchFields, receiver: str) -> tuple[int, int]:
        """Persist a batch in one transaction; return (newly stored, duplicates)."""
        return self.store_batches([batch], receiver)[0]

    def store_batches(self, batches: Sequence[BatchFields], receiver: str) -> list[tuple[int, int]]:
        """Persist several batches in ONE transaction; (newly stored, duplicates) of each, in order."""
        now = time.time()
        out = []
        with self._lock:
            self._db.execute(_BEGIN_WRITE)
            try:
                for batch in batches:
                    rows = _rows(batch, receiver, now, self._series)
                    before = self._db.total_changes
                    self._db.executemany(_INSERT_READINGS, rows)
                    stored = self._db.total_changes - before
                    out.append((stored, len(rows) - stored))
                    self._db.executemany(_SQLITE_INSERT_EVENTS, _event_rows(rows))
                self._db.execute(_COMMIT)
            except _SQLITE_VALUE_ERRORS as exc:
                self._db.execute(_ROLLBACK)
                raise UnstorableError(f"SQLite refused a value: {type(exc).__name__}: {exc}") from exc
            except BaseException:
                self._db.execute(_ROLLBACK)
                raise
        return out

    def record_rejection(
        self, site_id: str, batch_id: str | None, reason: str, detail: str, topic: str, size: int, receiver: str
    ) -> None:
        """Record a refused batch."""
        with self._lock:
            self._db.execute(
                _SQLITE_INSERT_REJECTION, (site_id, batch_id, reason, detail, topic, size, time.time(), receiver)
            )

    def record_status(self, status: Status, receiver: str = "") -> None:
        """Keep a site's latest status (the newest by its own timestamp)."""
        with self._lock:
            self._db.execute(_SQLITE_UPSERT_STATUS, _status_row(status, time.time(), receiver))

    def record_reply(self, reply: CommandReply) -> None:
        """Keep a command reply (the same reply twice is kept once)."""
        with self._lock:
            self._db.execute(_SQLITE_INSERT_REPLY, _reply_row(reply, time.time()))

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query without parameters."""
        with self._lock:
            return self._db.execute(sql).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def _pg_add_series(conn: Any) -> None:
    """A ``readings`` table made before the series key gets it, in the caller's transaction.

    ``readings_by_point`` is dropped first (not rebuilt for nothing), then the table is rewritten
    once with every row's series (``ALTER COLUMN ... TYPE ... USING`` writes a new copy of the table,
    leaving no dead rows behind as an ``UPDATE`` would); the caller then creates ``readings_by_series``.
    """
    table = conn.execute(_PG_READINGS_TABLE).fetchone()[0]
    if table is None:
        return
    has = conn.execute(_PG_HAS_SERIES).fetchone()
    if has:
        return
    old = conn.execute(_PG_OLD_INDEX).fetchone()
    if old:
        conn.execute(_PG_DROP_INDEX.format(old[0]))
    conn.execute(_PG_ADD_SERIES)
    conn.execute(_PG_FILL_SERIES)


class PostgresReceiverDB:
    """``postgresql://...`` (psycopg 3): a batch is one transaction, written with binary ``COPY``.

    A batch the centre has not seen (nearly all of them) is copied straight into ``readings``. When
    that meets a ``(site_id, seq)`` already held (a resend, or the same batch committed meanwhile by
    another receiver of the group: PostgreSQL makes the second COPY wait for the first one's commit
    and then refuses it), the transaction is rolled back and the batch written again through a
    temporary table and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, which counts what was new.
    """

    def __init__(self, url: str, series: SeriesCache | None = None) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SyncError("postgresql:// needs psycopg: pip install 'kinhbac-edge[receiver]'") from exc
        self._psycopg = psycopg
        self._url = url
        self._series = series or SeriesCache()
        self._lock = threading.Lock()
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
            conn.execute(_PG_LOCK_DDL, (_DDL_LOCK_KEY,))
            if conn.execute(_PG_SERIES_FUNCTION).fetchone()[0] is None:
                conn.execute(PG_FUNCTION)
            _pg_add_series(conn)
            for ddl in _PG_DDL + _STATUS_DDL:
                conn.execute(ddl)
        conn.execute(_PG_INCOMING)
        return conn

    def store_batch(self, batch: BatchFields, receiver: str) -> tuple[int, int]:
        """Persist a batch in one transaction; return (newly stored, duplicates)."""
        return self.store_batches([batch], receiver)[0]

    def store_batches(self, batches: Sequence[BatchFields], receiver: str) -> list[tuple[int, int]]:
        """Persist several batches in ONE transaction; (newly stored, duplicates) of each, in order.

        A broken connection (database restarted, session killed) is reopened once and the batches
        written again; a commit that did land before the break only turns into duplicates. A value
        the database refuses raises :class:`UnstorableError`.
        """
        psycopg = self._psycopg
        now = time.time()
        try:
            rows = [_rows(batch, receiver, now, self._series) for batch in batches]
            events = [event for batch_rows in rows for event in _event_rows(batch_rows)]
            stored = self._reconnecting(lambda: self._write(rows, events))
        except psycopg.errors.UniqueViolation:
            raise  # a race between receivers, not the batch's values: leave it unacknowledged
        except (psycopg.DataError, psycopg.IntegrityError, *_VALUE_ERRORS) as exc:
            raise UnstorableError(f"PostgreSQL refused a value: {type(exc).__name__}: {exc}") from exc
        return [(new, len(batch_rows) - new) for new, batch_rows in zip(stored, rows, strict=True)]

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

    def _write(self, rows: list[list[tuple[Any, ...]]], events: list[tuple[Any, ...]]) -> list[int]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                self._copy_rows(cur, _PG_COPY_DIRECT, [row for batch_rows in rows for row in batch_rows])
                self._insert_events(cur, events)
            return [len(batch_rows) for batch_rows in rows]
        except self._psycopg.errors.UniqueViolation:
            pass  # some of these readings are held already: count what is new, batch by batch
        stored = []
        with self._conn.transaction(), self._conn.cursor() as cur:
            for batch_rows in rows:
                self._copy_rows(cur, _PG_COPY_INCOMING, batch_rows)
                cur.execute(_PG_INSERT_INCOMING)
                stored.append(max(cur.rowcount, 0))
                cur.execute(_PG_EMPTY_INCOMING)
            self._insert_events(cur, events)
        return stored

    @staticmethod
    def _copy_rows(cur: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with cur.copy(sql) as copy:
            copy.set_types(_PG_READING_TYPES)
            for row in rows:
                copy.write_row(row)

    @staticmethod
    def _insert_events(cur: Any, events: list[tuple[Any, ...]]) -> None:
        if events:
            cur.executemany(_PG_INSERT_EVENTS, events)

    def record_rejection(
        self, site_id: str, batch_id: str | None, reason: str, detail: str, topic: str, size: int, receiver: str
    ) -> None:
        """Record a refused batch."""
        self._reconnecting(
            lambda: self._conn.execute(
                _PG_INSERT_REJECTION, (site_id, batch_id, reason, detail, topic, size, time.time(), receiver)
            )
        )

    def record_status(self, status: Status, receiver: str = "") -> None:
        """Keep a site's latest status (the newest by its own timestamp)."""
        row = _status_row(status, time.time(), receiver)
        self._reconnecting(lambda: self._conn.execute(_PG_UPSERT_STATUS, row))

    def record_reply(self, reply: CommandReply) -> None:
        """Keep a command reply (the same reply twice is kept once)."""
        row = _reply_row(reply, time.time())
        self._reconnecting(lambda: self._conn.execute(_PG_INSERT_REPLY, row))

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query without parameters."""
        return self._reconnecting(lambda: self._conn.execute(sql).fetchall())

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
