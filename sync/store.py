"""The crash-safe reading buffer: SQLite in WAL mode, one committed transaction per append.

A reading is *accepted* once :meth:`Store.append` returns: it is committed with ``synchronous=FULL``,
so neither a crash nor a power cut loses it. Rows leave only when the centre acknowledges them
(:meth:`Store.ack`), when the centre rejects their batch (:meth:`Store.reject`, which keeps them
aside), or when the byte cap forces the oldest telemetry out (counted, never alarms).

Sequence numbers are strictly increasing per site and survive restarts and even the loss of the
database file: a small side file (``<db>.seq``) durably reserves blocks of numbers before they are
used, and a fresh database starts above the last reservation.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kernel.errors import StoreCorrupt, StoreError
from kernel.metrics import Metrics
from kernel.readings import ClockQuality, Priority, Quality, Reading, Value
from sync.config import foreign_store_problem
from sync.wire import VT_BOOL, VT_FLOAT, VT_INT, VT_NULL, VT_STR, StoredRow

log = logging.getLogger("kbe.store")

SEQ_BLOCK = 1_000_000
_CHUNK = 500  # parameters per IN (...) query; well under SQLite's limit

# Value type tags: SQLite has no bool, and ints and floats must come back as they went in.
_VT_FLOAT, _VT_INT, _VT_STR, _VT_BOOL, _VT_NULL = VT_FLOAT, VT_INT, VT_STR, VT_BOOL, VT_NULL

# The order of sync.wire.StoredRow: rows go to the batch encoder as SQLite returns them.
_COLUMNS = "seq, priority, ts, device, point, value, vtype, unit, quality, clock, meta"


_READING_FIELDS = (
    "priority INTEGER NOT NULL, ts REAL NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL, value, "
    "vtype INTEGER NOT NULL, unit TEXT NOT NULL, quality INTEGER NOT NULL, clock INTEGER NOT NULL, meta TEXT"
)


def _m001_initial(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(f"CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, {_READING_FIELDS})")
    db.execute("CREATE INDEX readings_by_priority ON readings (priority, seq)")
    db.execute(
        f"CREATE TABLE rejected (seq INTEGER PRIMARY KEY, {_READING_FIELDS}, "
        "batch_id TEXT NOT NULL, reason TEXT NOT NULL, rejected_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX rejected_by_batch ON rejected (batch_id)")
    db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")


# Versioned migrations: index i brings the schema from version i to i + 1, in one transaction.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as held in the store, with its site sequence number."""

    seq: int
    reading: Reading


@dataclass(frozen=True)
class RejectedBatch:
    """Rows the centre refused, kept aside for an operator."""

    batch_id: str
    reason: str
    count: int
    first_seq: int
    last_seq: int
    rejected_at: float


@dataclass(frozen=True)
class StoreStats:
    """What the buffer holds now, and what it had to give up since it was created."""

    depth: int
    depth_by_priority: dict[Priority, int]
    bytes_used: int
    max_bytes: int
    oldest_ts: float | None
    last_seq: int
    dropped: dict[Priority, int]
    rejected: int
    quarantined: int

    @property
    def fill(self) -> float:
        """Used share of the byte cap, 0..1 (may pass 1 when only alarms are left)."""
        return self.bytes_used / self.max_bytes if self.max_bytes else 0.0


def _encode_value(value: Value) -> tuple[Value, int]:
    if value is None:
        return None, _VT_NULL
    if isinstance(value, bool):
        return int(value), _VT_BOOL
    if isinstance(value, int):
        return value, _VT_INT
    if isinstance(value, float):
        return value, _VT_FLOAT
    return str(value), _VT_STR


def _encode_row(r: Reading) -> tuple:
    value = r.value
    if type(value) is float:
        vtype = _VT_FLOAT
    else:
        value, vtype = _encode_value(value)
    meta = json.dumps(r.meta, separators=(",", ":"), ensure_ascii=False) if r.meta else None
    return (
        int(r.priority),
        r.ts,
        r.device,
        r.point,
        value,
        vtype,
        r.unit,
        int(r.quality),
        int(r.clock),
        meta,
    )


def _decode_value(value: Value, vtype: int) -> Value:
    if vtype == _VT_BOOL:
        return bool(value)
    if vtype == _VT_FLOAT and value is not None:
        return float(value)
    return value


# Enum members by value: indexing a tuple is much cheaper than calling the enum on the drain path.
_PRIORITIES = tuple(Priority)
_QUALITIES = tuple(Quality)
_CLOCKS = tuple(ClockQuality)


def _row_to_stored(row: tuple) -> StoredReading:
    seq, priority, ts, device, point, value, vtype, unit, quality, clock, meta = row
    if vtype != _VT_FLOAT and vtype != _VT_INT:
        value = _decode_value(value, vtype)
    elif vtype == _VT_FLOAT and type(value) is int:
        value = float(value)
    return StoredReading(
        seq,
        Reading(
            device,
            point,
            value,
            ts,
            unit,
            _QUALITIES[quality],
            _PRIORITIES[priority],
            _CLOCKS[clock],
            json.loads(meta) if meta else None,
        ),
    )


def _chunks(seqs: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(seqs), _CHUNK):
        yield seqs[i : i + _CHUNK]


_MIN_RUN = 8  # consecutive seqs worth a BETWEEN of their own


def _split_runs(seqs: Sequence[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """Sorted unique seqs as runs of consecutive numbers ``(lo, hi)`` and the scattered rest."""
    if not seqs:
        return [], []
    if seqs[-1] - seqs[0] == len(seqs) - 1 and len(seqs) >= _MIN_RUN:
        return [(seqs[0], seqs[-1])], []  # the usual batch: one run
    runs: list[tuple[int, int]] = []
    scattered: list[int] = []
    i, n = 0, len(seqs)
    while i < n:
        j = i
        while j + 1 < n and seqs[j + 1] == seqs[j] + 1:
            j += 1
        if j - i + 1 >= _MIN_RUN:
            runs.append((seqs[i], seqs[j]))
        else:
            scattered.extend(seqs[i : j + 1])
        i = j + 1
    return runs, scattered


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so itself.

    On SQLITE_FULL (and a few other errors) SQLite rolls the transaction back on its own; a second
    ROLLBACK would then raise and hide the original error (a full disk would never be recognised).
    """
    if db.in_transaction:
        db.execute("ROLLBACK")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _SeqReservation:
    """Durable high-water mark of sequence numbers handed out (``<db>.seq``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.limit = self._read()

    def _read(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            log.warning("sequence reservation %s is unreadable; relying on the database", self.path)
            return 0

    def ensure(self, last_needed: int) -> None:
        """Make sure every seq up to ``last_needed`` is covered by a durable reservation."""
        if last_needed < self.limit:
            return
        new_limit = (last_needed // SEQ_BLOCK + 1) * SEQ_BLOCK
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{new_limit}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.limit = new_limit


class Store:
    """The SQLite reading buffer of one site. Thread-safe; every method is short and synchronous."""

    def __init__(
        self,
        path: Path | str,
        site_id: str,
        max_bytes: int = 512 * 1024 * 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self.path = Path(path)
        self.site_id = site_id
        self.max_bytes = max_bytes
        self.metrics = metrics or Metrics()
        self.quarantined: list[Path] = []
        self._lock = threading.Lock()
        problem = foreign_store_problem(self.path)
        if problem:
            raise StoreError(problem)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq_file = _SeqReservation(self.path.with_name(self.path.name + ".seq"))
        self._db = self._open_checked()
        self._depth = self._count_depth()
        row = self._db.execute("SELECT value FROM counters WHERE name = 'resend_generation'").fetchone()
        self._resend_generation = int(row[0]) if row else 0
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])

    # -- opening, migrations, corruption ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA cache_size=-1024")  # 1 MiB: the hot pages are the newest; RSS matters more
        return db

    def _open_checked(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        try:
            db = self._connect()
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                db.close()
                raise StoreCorrupt(f"{self.path}: integrity check failed: {ok}")
            self._migrate(db)
            self._check_site(db)
        except (sqlite3.DatabaseError, StoreCorrupt) as exc:
            self._quarantine(str(exc))
            fresh = True
            db = self._connect()
            self._migrate(db)
            self._check_site(db)
        if fresh:
            # A new database (first start, or after quarantine) continues above every seq ever reserved.
            self._raise_sequence_floor(db)
        return db

    def _quarantine(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        _fsync_dir(self.path.parent)
        self.quarantined.append(target)
        log.error(
            "store %s is corrupt (%s); moved aside to %s, starting a fresh one", self.path, reason, target
        )

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {version} is newer than this agent understands ({SCHEMA_VERSION})"
            )
        for i in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[i](db)
                db.execute(f"PRAGMA user_version = {i + 1}")
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    def _check_site(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE key = 'site_id'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta (key, value) VALUES ('site_id', ?)", (self.site_id,))
        elif row[0] != self.site_id:
            raise StoreError(f"{self.path} belongs to site {row[0]!r}, not {self.site_id!r}")

    def _raise_sequence_floor(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        current = int(row[0]) if row else 0
        floor = self._seq_file.limit
        if floor > current:
            db.execute("BEGIN IMMEDIATE")
            if row is None:
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('readings', ?)", (floor,))
            else:
                db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'readings'", (floor,))
            db.execute("COMMIT")

    def _count_depth(self) -> dict[Priority, int]:
        depth = dict.fromkeys(Priority, 0)
        for prio, n in self._db.execute("SELECT priority, COUNT(*) FROM readings GROUP BY priority"):
            depth[Priority(prio)] = int(n)
        return depth

    # -- writing ----------------------------------------------------------------------------------

    def _last_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        return int(row[0]) if row else 0

    def append(self, readings: Sequence[Reading]) -> list[int]:
        """Commit readings in one transaction and return their sequence numbers.

        When this returns, the readings are accepted: durable on disk. Raises :class:`StoreError`
        (nothing accepted) when the disk is full even after dropping the oldest telemetry.
        """
        if not readings:
            return []
        rows = [_encode_row(r) for r in readings]
        with self._lock:
            for attempt in range(3):
                try:
                    return self._append_locked(rows, readings)
                except sqlite3.OperationalError as exc:
                    if "full" not in str(exc).lower() or attempt == 2:
                        raise StoreError(f"cannot commit readings to {self.path}: {exc}") from exc
                    # Disk full: give up the oldest telemetry (counted), then try again.
                    self._drop_oldest(max(len(rows), 1000), reason="disk_full")
        raise StoreError("unreachable")  # pragma: no cover

    def _append_locked(self, rows: list[tuple], readings: Sequence[Reading]) -> list[int]:
        db = self._db
        first = self._last_seq() + 1
        self._seq_file.ensure(first + len(rows))
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO readings (priority, ts, device, point, value, vtype, unit, quality, clock, meta) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            last = self._last_seq()
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        for r in readings:
            self._depth[r.priority] += 1
        self.metrics.inc("kbe_store_accepted_total", len(rows))
        if last - first + 1 != len(rows):
            raise StoreError(f"sequence gap in append: {first}..{last} for {len(rows)} rows")
        self._enforce_cap()
        return list(range(first, last + 1))

    def depth(self) -> int:
        """Readings waiting (unacknowledged), from the counters kept in memory: no query."""
        return sum(self._depth.values())

    def bytes_used(self) -> int:
        """Bytes of the database in use (pages minus free pages)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

    def _enforce_cap(self) -> None:
        used = self.bytes_used()
        if used <= self.max_bytes:
            return
        total = sum(self._depth.values())
        per_row = max(used / max(total, 1), 16.0)
        # Free a little more than the excess so the cap is not hit on every append.
        excess = used - int(self.max_bytes * 0.95)
        n = int(excess / per_row) + 1
        dropped = self._drop_oldest(n, reason="cap")
        if dropped == 0 and self._depth[Priority.ALARM] + self._depth[Priority.EVENT] == total:
            self.metrics.set("kbe_store_over_cap", 1)
            log.warning("store over its cap with only alarms and events left; keeping them")

    def _drop_oldest(self, n: int, reason: str) -> int:
        """Delete the oldest ``n`` telemetry rows (then events), never alarms; count the drops."""
        dropped_total = 0
        for prio in (Priority.TELEMETRY, Priority.EVENT):
            want = n - dropped_total
            if want <= 0:
                break
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "DELETE FROM readings WHERE seq IN "
                    "(SELECT seq FROM readings WHERE priority = ? ORDER BY seq LIMIT ?)",
                    (int(prio), want),
                )
                count = cur.rowcount
                self._bump(f"dropped_{prio.name.lower()}", count)
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                raise
            self._depth[prio] -= count
            dropped_total += count
            if count:
                self.metrics.inc(
                    "kbe_store_dropped_total", count, {"priority": prio.name.lower(), "reason": reason}
                )
                log.warning(
                    "store full (%s): dropped %d oldest %s readings", reason, count, prio.name.lower()
                )
        return dropped_total

    def _bump(self, name: str, amount: int) -> None:
        if amount:
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, amount),
            )

    # -- reading back -----------------------------------------------------------------------------

    def pending(
        self, limit: int, after_seq: int = 0, priority: Priority | None = None
    ) -> list[StoredReading]:
        """Unacknowledged readings with ``seq > after_seq``, oldest first (one priority class, or all)."""
        with self._lock:
            if priority is None:
                cur = self._db.execute(
                    f"SELECT {_COLUMNS} FROM readings WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
                )
            else:
                cur = self._db.execute(
                    f"SELECT {_COLUMNS} FROM readings WHERE priority = ? AND seq > ? ORDER BY priority, seq LIMIT ?",
                    (int(priority), after_seq, limit),
                )
            return [_row_to_stored(row) for row in cur]

    def pending_rows(self, limit: int, after_seq: int, priority: Priority) -> list[StoredRow]:
        """Like :meth:`pending` for one class, as raw rows (``sync.wire.StoredRow``): the uplink's hot path."""
        with self._lock:
            return self._db.execute(
                f"SELECT {_COLUMNS} FROM readings WHERE priority = ? AND seq > ? ORDER BY priority, seq LIMIT ?",
                (int(priority), after_seq, limit),
            ).fetchall()

    def newest_rows(self, limit: int, priority: Priority, above_seq: int) -> list[StoredRow]:
        """Like :meth:`newest`, as raw rows (``sync.wire.StoredRow``), newest first."""
        with self._lock:
            return self._db.execute(
                f"SELECT {_COLUMNS} FROM readings WHERE priority = ? AND seq > ? ORDER BY priority DESC, seq DESC "
                "LIMIT ?",
                (int(priority), above_seq, limit),
            ).fetchall()

    def newest(
        self, limit: int, priority: Priority = Priority.TELEMETRY, above_seq: int = 0
    ) -> list[StoredReading]:
        """The newest unacknowledged readings of one class (seq > ``above_seq``), newest first."""
        with self._lock:
            cur = self._db.execute(
                f"SELECT {_COLUMNS} FROM readings WHERE priority = ? AND seq > ? ORDER BY priority DESC, seq DESC "
                "LIMIT ?",
                (int(priority), above_seq, limit),
            )
            return [_row_to_stored(row) for row in cur]

    def fetch(self, seqs: Sequence[int]) -> list[StoredReading]:
        """The still-stored readings among ``seqs``, in seq order."""
        out: list[StoredReading] = []
        with self._lock:
            for chunk in _chunks(sorted(seqs)):
                marks = ",".join("?" * len(chunk))
                cur = self._db.execute(
                    f"SELECT {_COLUMNS} FROM readings WHERE seq IN ({marks}) ORDER BY seq", chunk
                )
                out.extend(_row_to_stored(row) for row in cur)
        return out

    # -- leaving the store ------------------------------------------------------------------------

    def _remove(self, seqs: Sequence[int], keep_aside: tuple[str, str] | None = None) -> int:
        """Delete ``seqs`` in one transaction (first copying them to ``rejected`` with
        ``keep_aside = (batch_id, reason)``); keep the depth counters right; return how many were here.

        A run of consecutive seqs (the usual batch) goes as one ``BETWEEN``: seqs are unique, so the
        rows in ``[lo, hi]`` are exactly the run. Scattered seqs go in ``IN (...)`` chunks.
        """
        removed = 0
        now = time.time()
        runs, scattered = _split_runs(sorted(set(seqs)))
        clauses: list[tuple[str, Sequence[int]]] = [("seq BETWEEN ? AND ?", run) for run in runs]
        clauses.extend((f"seq IN ({','.join('?' * len(chunk))})", chunk) for chunk in _chunks(scattered))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for where, params in clauses:
                    counts = self._db.execute(
                        f"SELECT priority, COUNT(*) FROM readings WHERE {where} GROUP BY priority", params
                    ).fetchall()
                    if keep_aside is not None:
                        self._db.execute(
                            f"INSERT OR IGNORE INTO rejected ({_COLUMNS}, batch_id, reason, rejected_at) "
                            f"SELECT {_COLUMNS}, ?, ?, ? FROM readings WHERE {where}",
                            (*keep_aside, now, *params),
                        )
                    self._db.execute(f"DELETE FROM readings WHERE {where}", params)
                    for prio, n in counts:
                        self._depth[_PRIORITIES[prio]] -= int(n)
                        removed += int(n)
                if keep_aside is not None:
                    self._bump("rejected", removed)
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                self._depth = self._count_depth()
                raise
        return removed

    def ack(self, seqs: Sequence[int]) -> int:
        """Delete readings the centre has persisted; return how many were still here."""
        if not seqs:
            return 0
        removed = self._remove(seqs)
        self.metrics.inc("kbe_store_acked_total", removed)
        return removed

    def reject(self, seqs: Sequence[int], batch_id: str, reason: str) -> int:
        """Move readings of a batch the centre refused into the ``rejected`` table; return how many."""
        if not seqs:
            return 0
        moved = self._remove(seqs, keep_aside=(batch_id, reason))
        self.metrics.inc("kbe_store_rejected_total", moved)
        log.error("centre rejected batch %s (%s): %d readings kept aside", batch_id, reason, moved)
        return moved

    def rejected_batches(self) -> list[RejectedBatch]:
        """Batches kept aside after the centre refused them, oldest first."""
        with self._lock:
            return _rejected_batches(self._db)

    def rejected_readings(self, batch_id: str) -> list[StoredReading]:
        """The readings of one rejected batch."""
        with self._lock:
            return _rejected_readings(self._db, batch_id)

    def resend_requested(self) -> bool:
        """True once after ``edge-agent store resend`` put rejected rows back (then the depth is recounted)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'resend_generation'").fetchone()
            generation = int(row[0]) if row else 0
            if generation == self._resend_generation:
                return False
            self._resend_generation = generation
            self._depth = self._count_depth()
            return True

    # -- reporting --------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Cumulative counters kept in the database (drops per class, rejected)."""
        with self._lock:
            return {name: int(v) for name, v in self._db.execute("SELECT name, value FROM counters")}

    def stats(self) -> StoreStats:
        """Depth, size, age of the oldest unsent reading, cumulative drops."""
        counters = self.counters()
        with self._lock:
            row = self._db.execute("SELECT ts FROM readings ORDER BY seq LIMIT 1").fetchone()
            oldest = float(row[0]) if row and row[0] is not None else None
            used = self.bytes_used()
            last = self._last_seq()
            depth = dict(self._depth)
        return StoreStats(
            depth=sum(depth.values()),
            depth_by_priority=depth,
            bytes_used=used,
            max_bytes=self.max_bytes,
            oldest_ts=oldest,
            last_seq=last,
            dropped={p: counters.get(f"dropped_{p.name.lower()}", 0) for p in Priority},
            rejected=counters.get("rejected", 0),
            quarantined=len(self.quarantined),
        )

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError:
                pass
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rejected_batches(db: sqlite3.Connection) -> list[RejectedBatch]:
    rows = db.execute(
        "SELECT batch_id, reason, COUNT(*), MIN(seq), MAX(seq), MIN(rejected_at) FROM rejected "
        "GROUP BY batch_id, reason ORDER BY MIN(seq)"
    ).fetchall()
    return [RejectedBatch(b, r, int(n), int(lo), int(hi), float(at)) for b, r, n, lo, hi, at in rows]


def _rejected_readings(db: sqlite3.Connection, batch_id: str, limit: int = -1) -> list[StoredReading]:
    cur = db.execute(f"SELECT {_COLUMNS} FROM rejected WHERE batch_id = ? ORDER BY seq LIMIT ?", (batch_id, limit))
    return [_row_to_stored(row) for row in cur]


class StoreFile:
    """An agent's store opened by a tool beside the running agent (``edge-agent store``).

    Never created, migrated or moved aside: a file that is missing, not an agent store or of
    another schema version is refused with a :class:`StoreError`. SQLite's locking (WAL) keeps
    the agent and the tool apart.
    """

    def __init__(self, path: Path, write: bool = False) -> None:
        problem = foreign_store_problem(path)
        if problem is None and not path.is_file():
            problem = f"{str(path)!r} does not exist (has the agent run with this config?)"
        if problem:
            raise StoreError(problem)
        self.path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode={'rw' if write else 'ro'}", uri=True, timeout=10.0,
                                       isolation_level=None)
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from exc
        if version != SCHEMA_VERSION:
            self._db.close()
            raise StoreError(f"{path}: store schema version {version}, this tool reads {SCHEMA_VERSION}")

    def summary(self) -> dict[str, object]:
        """Depth per class, size, oldest waiting reading, drops and readings kept aside."""
        db = self._db
        depth = {Priority(p).name.lower(): int(n)
                 for p, n in db.execute("SELECT priority, COUNT(*) FROM readings GROUP BY priority")}
        oldest = db.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
        counters = {n: int(v) for n, v in db.execute("SELECT name, value FROM counters")}
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        pages = int(db.execute("PRAGMA page_count").fetchone()[0]) * int(db.execute("PRAGMA page_size").fetchone()[0])
        return {
            "path": str(self.path),
            "waiting": sum(depth.values()),
            "waiting_by_priority": depth,
            "oldest_waiting_ts": oldest,
            "last_seq": int(row[0]) if row else 0,
            "bytes": pages,
            "dropped": {k.removeprefix("dropped_"): v for k, v in counters.items() if k.startswith("dropped_")},
            "rejected_readings": int(db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]),
            "rejected_batches": int(db.execute("SELECT COUNT(DISTINCT batch_id) FROM rejected").fetchone()[0]),
        }

    def rejected_batches(self) -> list[RejectedBatch]:
        """Batches kept aside, oldest first."""
        return _rejected_batches(self._db)

    def rejected_readings(self, batch_id: str, limit: int = -1) -> list[StoredReading]:
        """Readings of one batch kept aside."""
        return _rejected_readings(self._db, batch_id, limit)

    def resend(self, batch_ids: Sequence[str]) -> int:
        """Put the rows of these batches back in the queue (same seqs; the centre deduplicates); return how many.

        The running agent notices within ``sync.keepalive_s`` and sends them in new batches.
        """
        db = self._db
        moved = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for bid in batch_ids:
                cur = db.execute(
                    f"INSERT OR IGNORE INTO readings ({_COLUMNS}) "
                    f"SELECT {_COLUMNS} FROM rejected WHERE batch_id = ?", (bid,)
                )
                moved += max(cur.rowcount, 0)
                db.execute("DELETE FROM rejected WHERE batch_id = ?", (bid,))
            for name, amount in (("rejected", -moved), ("resend_generation", 1)):
                db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (name, amount),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return moved

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
