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
from kernel.readings import Priority, Reading
from sync import rowcodec
from sync.rowcodec import Chunk, NewRow
from sync.store_file import foreign_store_problem
from sync.store_schema import MIGRATIONS, POLL_COLUMNS, SCHEMA_VERSION
from sync.wire_batch import StoredRow

log = logging.getLogger("kbe.store")

SEQ_BLOCK = 1_000_000
_RUN_CHUNK = 200  # seq runs per ack/reject query

# Every SQL statement the store runs, named for what it does. They live here, not in the
# functions, so that mutation testing (docs/testing.md) does not count their letter case, which
# SQLite ignores; the tests check what each statement does.
_BEGIN_WRITE = "BEGIN IMMEDIATE"
_COMMIT = "COMMIT"
_ROLLBACK = "ROLLBACK"

_PRAGMA_WAL = "PRAGMA journal_mode=WAL"
_PRAGMA_SYNC_FULL = "PRAGMA synchronous=FULL"
_PRAGMA_FOREIGN_KEYS = "PRAGMA foreign_keys=ON"
_PRAGMA_SMALL_CACHE = "PRAGMA cache_size=-1024"  # 1 MiB: the hot pages are the newest; RSS matters more
_PRAGMA_QUICK_CHECK = "PRAGMA quick_check"
_GET_SCHEMA_VERSION = "PRAGMA user_version"
_SET_SCHEMA_VERSION = "PRAGMA user_version = {}"  # PRAGMA takes no bound parameter: an int is formatted in
_GET_PAGE_SIZE = "PRAGMA page_size"
_GET_PAGE_COUNT = "PRAGMA page_count"
_GET_FREE_PAGES = "PRAGMA freelist_count"
_CHECKPOINT_WAL = "PRAGMA wal_checkpoint(TRUNCATE)"

_GET_SITE_ID = "SELECT value FROM meta WHERE key = 'site_id'"
_SET_SITE_ID = "INSERT INTO meta (key, value) VALUES ('site_id', ?)"

_GET_LAST_SEQ = "SELECT value FROM counters WHERE name = 'last_seq'"
_SET_LAST_SEQ = (
    "INSERT INTO counters (name, value) VALUES ('last_seq', ?) "
    "ON CONFLICT(name) DO UPDATE SET value = excluded.value"
)
_GET_RESEND_GENERATION = "SELECT value FROM counters WHERE name = 'resend_generation'"
_ADD_TO_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)
_ALL_COUNTERS = "SELECT name, value FROM counters"

_INSERT_POLL = f"INSERT INTO polls ({POLL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
_DELETE_POLL = "DELETE FROM polls WHERE seq_first = ?"
_DEPTH_BY_PRIORITY = "SELECT priority, SUM(n) FROM polls GROUP BY priority"
_OLDEST_TS = "SELECT ts FROM polls ORDER BY seq_first LIMIT 1"
_MIN_TS = "SELECT MIN(ts) FROM polls"
_WAITING = "SELECT COALESCE(SUM(n), 0) FROM polls"
_HAS_POLLS_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'polls'"
_WAITING_V1 = "SELECT COUNT(*) FROM readings"
_ALL_BODIES = "SELECT body FROM polls ORDER BY seq_first"

# The oldest rows of one class first (the cap's and the full disk's drops), and the drop of the
# whole rows up to a seq.
_CLASS_OLDEST_FIRST = f"SELECT {POLL_COLUMNS} FROM polls WHERE priority = ? ORDER BY priority, seq_last"
_DELETE_CLASS_UPTO = "DELETE FROM polls WHERE priority = ? AND seq_last <= ?"

# Rows holding a seq past a given one, all classes or one (``pending``).
_BODIES_AFTER = "SELECT body FROM polls WHERE seq_first > ? AND seq_last > ? ORDER BY seq_first"
_CLASS_BODIES_AFTER = "SELECT body FROM polls WHERE priority = ? AND seq_last > ? ORDER BY priority, seq_last"

# Rows of one class holding a seq past a given one, as chunks, oldest or newest first.
_CHUNK_COLUMNS = "seq_first, seq_last, priority, body"
_CHUNKS = (
    f"SELECT {_CHUNK_COLUMNS} FROM polls WHERE priority = ? AND seq_last > ? "
    "ORDER BY priority {order}, seq_last {order} LIMIT ?"
)
_CHUNKS_OLDEST_FIRST = _CHUNKS.format(order="ASC")
_CHUNKS_NEWEST_FIRST = _CHUNKS.format(order="DESC")

# A seq run lo..hi: the rows touching it (they start in lo - ROW_MAX < seq_first <= hi), the rows it
# cuts (touching and reaching past one of its ends), and the rows wholly inside it.
_TOUCHING_RUN = "seq_first > ? AND seq_first <= ? AND seq_last >= ?"
_BODIES_TOUCHING_RUN = f"SELECT body FROM polls WHERE {_TOUCHING_RUN} ORDER BY seq_first"
_ROWS_CUT_BY_RUN = f"SELECT {POLL_COLUMNS} FROM polls WHERE {_TOUCHING_RUN} AND (seq_first < ? OR seq_last > ?)"
_INSIDE_RUN = "seq_first >= ? AND seq_last <= ?"
_DEPTH_INSIDE_RUN = f"SELECT priority, SUM(n) FROM polls WHERE {_INSIDE_RUN} GROUP BY priority"
_KEEP_ASIDE_INSIDE_RUN = (
    f"INSERT INTO rejected_polls ({POLL_COLUMNS}, batch_id, reason, rejected_at) "
    f"SELECT {POLL_COLUMNS}, ?, ?, ? FROM polls WHERE {_INSIDE_RUN}"
)
_DELETE_INSIDE_RUN = f"DELETE FROM polls WHERE {_INSIDE_RUN}"

_KEEP_ASIDE = (
    f"INSERT INTO rejected_polls ({POLL_COLUMNS}, batch_id, reason, rejected_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_REJECTED_BATCHES = (
    "SELECT batch_id, reason, SUM(n), MIN(seq_first), MAX(seq_last), MIN(rejected_at) FROM rejected_polls "
    "GROUP BY batch_id, reason ORDER BY MIN(seq_first)"
)
_REJECTED_BODIES = "SELECT body FROM rejected_polls WHERE batch_id = ? ORDER BY seq_first"
_REJECTED_RANGES = "SELECT seq_first, seq_last, reason FROM rejected_polls"
_REJECTED_WAITING = "SELECT COALESCE(SUM(n), 0) FROM rejected_polls"
_REJECTED_BATCH_COUNT = "SELECT COUNT(DISTINCT batch_id) FROM rejected_polls"
_REJECTED_WAITING_OF_BATCH = "SELECT COALESCE(SUM(n), 0) FROM rejected_polls WHERE batch_id = ?"
_RESEND_BATCH = f"INSERT INTO polls ({POLL_COLUMNS}) SELECT {POLL_COLUMNS} FROM rejected_polls WHERE batch_id = ?"
_DELETE_REJECTED_BATCH = "DELETE FROM rejected_polls WHERE batch_id = ?"


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


_PRIORITIES = tuple(Priority)


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted unique seqs as runs of consecutive numbers ``(lo, hi)``."""
    if not seqs:
        return []
    if seqs[-1] - seqs[0] == len(seqs) - 1:
        return [(seqs[0], seqs[-1])]  # the usual batch: one run
    runs: list[tuple[int, int]] = []
    lo = prev = seqs[0]
    for s in seqs[1:]:
        if s != prev + 1:
            runs.append((lo, prev))
            lo = s
        prev = s
    runs.append((lo, prev))
    return runs


def _pieces(row: tuple, lo: int, hi: int) -> tuple[NewRow | None, list[NewRow]]:
    """A stored row cut by the seq run ``lo..hi``: the part inside it and the parts left outside."""
    a, b, prio, ts, _n, blob = row
    frags = rowcodec.split(rowcodec.unpack(blob))
    inside: NewRow | None = None
    outside: list[NewRow] = []
    for x, y, keep in ((a, lo - 1, True), (max(a, lo), min(b, hi), False), (hi + 1, b, True)):
        x, y = max(x, a), min(y, b)
        if x > y:
            continue
        body = ",".join(frags[x - a : y - a + 1])
        piece = (x, y, prio, ts if x == a else rowcodec.row_ts(body), y - x + 1, rowcodec.pack(body))
        if keep:
            outside.append(piece)
        else:
            inside = piece
    return inside, outside


def _readings(rows: Iterable[tuple[bytes]], keep: Callable[[int], bool], limit: int) -> list[StoredReading]:
    """Readings of stored rows' bodies whose seq ``keep`` accepts, at most ``limit`` (all when negative)."""
    out: list[StoredReading] = []
    for (blob,) in rows:
        for seq, r in rowcodec.decode_text(rowcodec.unpack(blob)):
            if keep(seq):
                if len(out) == limit:
                    return out
                out.append(StoredReading(seq, r))
    return out


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so itself.

    On SQLITE_FULL (and a few other errors) SQLite rolls the transaction back on its own; a second
    ROLLBACK would then raise and hide the original error (a full disk would never be recognised).
    """
    if db.in_transaction:
        db.execute(_ROLLBACK)


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
        self._repaired_logged: set[tuple[str, str]] = set()
        self._tails = rowcodec.TailEncoder()
        self._over_cap = False
        self.quarantined: list[Path] = []
        self._lock = threading.Lock()
        problem = foreign_store_problem(self.path)
        if problem:
            raise StoreError(problem)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq_file = _SeqReservation(self.path.with_name(self.path.name + ".seq"))
        self._db = self._open_checked()
        self._depth = self._count_depth()
        row = self._db.execute(_GET_RESEND_GENERATION).fetchone()
        self._resend_generation = int(row[0]) if row else 0
        self._page_size = int(self._db.execute(_GET_PAGE_SIZE).fetchone()[0])

    # -- opening, migrations, corruption ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        db.execute(_PRAGMA_WAL)
        db.execute(_PRAGMA_SYNC_FULL)
        db.execute(_PRAGMA_FOREIGN_KEYS)
        db.execute(_PRAGMA_SMALL_CACHE)
        return db

    def _open_checked(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        try:
            db = self._connect()
            ok = db.execute(_PRAGMA_QUICK_CHECK).fetchone()[0]
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
        version = int(db.execute(_GET_SCHEMA_VERSION).fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {version} is newer than this agent understands ({SCHEMA_VERSION})"
            )
        for i in range(version, SCHEMA_VERSION):
            db.execute(_BEGIN_WRITE)
            try:
                MIGRATIONS[i](db)
                db.execute(_SET_SCHEMA_VERSION.format(i + 1))
                db.execute(_COMMIT)
            except BaseException:
                _rollback(db)
                raise

    def _check_site(self, db: sqlite3.Connection) -> None:
        row = db.execute(_GET_SITE_ID).fetchone()
        if row is None:
            db.execute(_SET_SITE_ID, (self.site_id,))
        elif row[0] != self.site_id:
            raise StoreError(f"{self.path} belongs to site {row[0]!r}, not {self.site_id!r}")

    def _raise_sequence_floor(self, db: sqlite3.Connection) -> None:
        current = _last_seq(db)
        floor = self._seq_file.limit
        if floor > current:
            db.execute(_BEGIN_WRITE)
            _set_last_seq(db, floor)
            db.execute(_COMMIT)

    def _count_depth(self) -> dict[Priority, int]:
        depth = dict.fromkeys(Priority, 0)
        for prio, n in self._db.execute(_DEPTH_BY_PRIORITY):
            depth[Priority(prio)] = int(n)
        return depth

    # -- writing ----------------------------------------------------------------------------------

    def append(self, readings: Sequence[Reading]) -> list[int]:
        """Commit readings in one transaction and return their sequence numbers.

        When this returns, the readings are accepted: durable on disk. Raises :class:`StoreError`
        (nothing accepted) when the disk is full even after dropping the oldest telemetry. A poll's
        readings (one device, one class) are kept as one row holding their wire JSON.
        """
        if not readings:
            return []
        repaired: list[tuple[str, str]] = []
        tails = self._tails.encode(readings, repaired)  # before the lock: only the seqs are added under it
        if repaired:
            self._count_repaired(repaired)
        with self._lock:
            for attempt in range(3):
                try:
                    return self._append_locked(readings, tails)
                except sqlite3.OperationalError as exc:
                    if "full" not in str(exc).lower() or attempt == 2:
                        raise StoreError(f"cannot commit readings to {self.path}: {exc}") from exc
                    # Disk full: give up the oldest telemetry (counted), then try again.
                    self._drop_oldest(max(len(readings), 1000), reason="disk_full")
        raise StoreError("unreachable")  # pragma: no cover

    def _count_repaired(self, repaired: list[tuple[str, str]]) -> None:
        """Count texts stored with U+FFFD in place of a NUL or lone surrogate (sync.rowcodec.UNSTORABLE);
        log each point once."""
        self.metrics.inc("kbe_store_text_repaired_total", len(repaired))
        for device, point in dict.fromkeys(repaired):
            if (device, point) not in self._repaired_logged and len(self._repaired_logged) < 1000:
                self._repaired_logged.add((device, point))
                log.warning("%s/%s sent text holding a NUL or a lone surrogate, which the centre cannot "
                            "store: stored with U+FFFD in its place", rowcodec.storable(device),
                            rowcodec.storable(point))

    def _append_locked(self, readings: Sequence[Reading], tails: list[str]) -> list[int]:
        db = self._db
        first = _last_seq(db) + 1
        last = first + len(readings) - 1
        self._seq_file.ensure(last + 1)
        rows = rowcodec.build_rows(first, readings, tails)
        db.execute(_BEGIN_WRITE)
        try:
            db.executemany(_INSERT_POLL, rows)
            _set_last_seq(db, last)
            db.execute(_COMMIT)
        except BaseException:
            _rollback(db)
            raise
        for row in rows:
            self._depth[_PRIORITIES[row[2]]] += row[4]
        self.metrics.inc("kbe_store_accepted_total", len(readings))
        self._enforce_cap()
        return list(range(first, last + 1))

    def depth(self) -> int:
        """Readings waiting (unacknowledged), from the counters kept in memory: no query."""
        return sum(self._depth.values())

    def bytes_used(self) -> int:
        """Bytes of the database in use (pages minus free pages)."""
        pages = self._db.execute(_GET_PAGE_COUNT).fetchone()[0]
        free = self._db.execute(_GET_FREE_PAGES).fetchone()[0]
        return int(pages - free) * self._page_size

    def _enforce_cap(self) -> None:
        used = self.bytes_used()
        if used <= self.max_bytes:
            if self._over_cap:
                self._over_cap = False
                self.metrics.set("kbe_store_over_cap", 0)
                log.info("store back under its cap")
            return
        total = sum(self._depth.values())
        per_reading = max(used / max(total, 1), 16.0)
        # Free a little more than the excess so the cap is not hit on every append.
        excess = used - int(self.max_bytes * 0.95)
        n = int(excess / per_reading) + 1
        dropped = self._drop_oldest(n, reason="cap")
        if dropped == 0 and self._depth[Priority.ALARM] + self._depth[Priority.EVENT] == total:
            self.metrics.set("kbe_store_over_cap", 1)
            if not self._over_cap:  # once per episode, not at every commit
                log.warning("store over its cap with only alarms and events left; keeping them")
            self._over_cap = True

    def _drop_oldest(self, n: int, reason: str) -> int:
        """Delete the oldest rows of telemetry (then events) holding at least ``n`` readings, never
        alarms; count the readings dropped."""
        dropped_total = 0
        for prio in (Priority.TELEMETRY, Priority.EVENT):
            want = n - dropped_total
            if want <= 0:
                break
            self._db.execute(_BEGIN_WRITE)
            try:
                count = self._drop_rows(prio, want)
                self._bump(f"dropped_{prio.name.lower()}", count)
                self._db.execute(_COMMIT)
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

    def _drop_rows(self, prio: Priority, want: int) -> int:
        """Delete the oldest ``want`` readings of one class (fewer if it holds fewer): whole rows, and
        the first part of the row where the count is reached."""
        db = self._db
        count, upto, last = 0, 0, None
        for row in db.execute(_CLASS_OLDEST_FIRST, (int(prio),)):
            if count + row[4] > want:
                last = row
                break
            count += row[4]
            upto = row[1]
            if count == want:
                break
        db.execute(_DELETE_CLASS_UPTO, (int(prio), upto))
        if last is not None and count < want:
            _inside, outside = _pieces(last, last[0], last[0] + want - count - 1)
            db.execute(_DELETE_POLL, (last[0],))
            db.executemany(_INSERT_POLL, outside)
            count = want
        return count

    def _bump(self, name: str, amount: int) -> None:
        if amount:
            _bump(self._db, name, amount)

    # -- reading back -----------------------------------------------------------------------------

    def pending(
        self, limit: int, after_seq: int = 0, priority: Priority | None = None
    ) -> list[StoredReading]:
        """Unacknowledged readings with ``seq > after_seq``, oldest first (one priority class, or all)."""
        with self._lock:
            if priority is None:
                # Rows are at most ROW_MAX long: a row holding a seq past after_seq starts past this.
                cur = self._db.execute(_BODIES_AFTER, (after_seq - rowcodec.ROW_MAX, after_seq))
            else:
                cur = self._db.execute(_CLASS_BODIES_AFTER, (int(priority), after_seq))
            return _readings(cur, lambda seq: seq > after_seq, limit)

    def pending_chunks(self, limit: int, after_seq: int, priority: Priority) -> list[Chunk]:
        """Stored rows of one class holding readings with ``seq > after_seq``, oldest first, until
        they hold ``limit`` readings (the first may start at or before ``after_seq``): the uplink's hot path."""
        return self._chunks(_CHUNKS_OLDEST_FIRST, limit, after_seq, priority)

    def newest_chunks(self, limit: int, priority: Priority, above_seq: int) -> list[Chunk]:
        """Stored rows of one class holding readings with ``seq > above_seq``, newest first, until
        they hold ``limit`` readings (the last may start at or before ``above_seq``)."""
        return self._chunks(_CHUNKS_NEWEST_FIRST, limit, above_seq, priority)

    def _chunks(self, query: str, limit: int, above_seq: int, priority: Priority) -> list[Chunk]:
        out: list[Chunk] = []
        with self._lock:
            cur = self._db.execute(query, (int(priority), above_seq, limit))
            got = 0
            for a, b, prio, blob in cur:
                out.append((a, b, prio, rowcodec.unpack(blob)))
                got += b - max(a, above_seq + 1) + 1
                if got >= limit:
                    break
        return out

    def pending_rows(self, limit: int, after_seq: int, priority: Priority) -> list[StoredRow]:
        """Like :meth:`pending` for one class, as per-reading rows (``sync.wire_batch.StoredRow``)."""
        out: list[StoredRow] = []
        for a, _b, _p, text in self.pending_chunks(limit, after_seq, priority):
            for k, fragment in enumerate(rowcodec.split(text)):
                if a + k > after_seq and len(out) < limit:
                    out.append(rowcodec.stored_row(fragment))
        return out

    def newest(
        self, limit: int, priority: Priority = Priority.TELEMETRY, above_seq: int = 0
    ) -> list[StoredReading]:
        """The newest unacknowledged readings of one class (seq > ``above_seq``), newest first."""
        out: list[StoredReading] = []
        for _a, _b, _p, text in self.newest_chunks(limit, priority, above_seq):
            for seq, r in reversed(list(rowcodec.decode_text(text))):
                if seq > above_seq and len(out) < limit:
                    out.append(StoredReading(seq, r))
        return out

    def fetch(self, seqs: Sequence[int]) -> list[StoredReading]:
        """The still-stored readings among ``seqs``, in seq order."""
        wanted = set(seqs)
        out: list[StoredReading] = []
        with self._lock:
            for lo, hi in _runs(sorted(wanted)):
                cur = self._db.execute(_BODIES_TOUCHING_RUN, (lo - rowcodec.ROW_MAX, hi, lo))
                out.extend(_readings(cur, wanted.__contains__, -1))
        return out

    # -- leaving the store ------------------------------------------------------------------------

    def _remove(self, seqs: Sequence[int], keep_aside: tuple[str, str] | None = None) -> int:
        """Delete ``seqs`` in one transaction (first copying them to ``rejected_polls`` with
        ``keep_aside = (batch_id, reason)``); keep the depth counters right; return how many were here.

        Each run of consecutive seqs deletes the rows inside it with one statement; a row the run
        covers only in part (at most one at each end) is split and its uncovered part kept.
        """
        removed = 0
        now = time.time()
        runs = _runs(sorted(set(seqs)))
        db = self._db
        with self._lock:
            db.execute(_BEGIN_WRITE)
            try:
                for lo, hi in runs:
                    removed += self._remove_run(lo, hi, keep_aside, now)
                if keep_aside is not None:
                    self._bump("rejected", removed)
                db.execute(_COMMIT)
            except BaseException:
                _rollback(db)
                self._depth = self._count_depth()
                raise
        return removed

    def _remove_run(self, lo: int, hi: int, keep_aside: tuple[str, str] | None, now: float) -> int:
        db = self._db
        removed = 0
        # Rows are at most ROW_MAX long, so every row touching lo..hi starts in this window.
        window = (lo - rowcodec.ROW_MAX, hi, lo)
        for row in db.execute(_ROWS_CUT_BY_RUN, (*window, lo, hi)).fetchall():
            inside, outside = _pieces(row, lo, hi)
            db.execute(_DELETE_POLL, (row[0],))
            db.executemany(_INSERT_POLL, outside)
            if inside is not None:
                if keep_aside is not None:
                    _keep_aside(db, [inside], keep_aside, now)
                self._depth[_PRIORITIES[inside[2]]] -= inside[4]
                removed += inside[4]
        counts = db.execute(_DEPTH_INSIDE_RUN, (lo, hi)).fetchall()
        if keep_aside is not None:
            db.execute(_KEEP_ASIDE_INSIDE_RUN, (*keep_aside, now, lo, hi))
        db.execute(_DELETE_INSIDE_RUN, (lo, hi))
        for prio, n in counts:
            self._depth[_PRIORITIES[prio]] -= int(n)
            removed += int(n)
        return removed

    def ack(self, seqs: Sequence[int]) -> int:
        """Delete readings the centre has persisted; return how many were still here."""
        if not seqs:
            return 0
        removed = self._remove(seqs)
        self.metrics.inc("kbe_store_acked_total", removed)
        return removed

    def reject(self, seqs: Sequence[int], batch_id: str, reason: str) -> int:
        """Move readings of a batch the centre refused into ``rejected_polls``; return how many."""
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
            row = self._db.execute(_GET_RESEND_GENERATION).fetchone()
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
            return {name: int(v) for name, v in self._db.execute(_ALL_COUNTERS)}

    def stats(self) -> StoreStats:
        """Depth, size, age of the oldest unsent reading, cumulative drops."""
        counters = self.counters()
        with self._lock:
            row = self._db.execute(_OLDEST_TS).fetchone()
            oldest = float(row[0]) if row and row[0] is not None else None
            used = self.bytes_used()
            last = _last_seq(self._db)
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
                self._db.execute(_CHECKPOINT_WAL)
            except sqlite3.DatabaseError:
                pass
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def waiting_readings(db: sqlite3.Connection) -> int:
    """Readings waiting in a store file of any schema version (a tool's look before the agent migrates it)."""
    if db.execute(_HAS_POLLS_TABLE).fetchone():
        return int(db.execute(_WAITING).fetchone()[0])
    return int(db.execute(_WAITING_V1).fetchone()[0])


def stored_readings(db: sqlite3.Connection) -> list[StoredReading]:
    """Every waiting reading of a store file, in seq order (tools and tests reading beside the agent)."""
    return _readings(db.execute(_ALL_BODIES), lambda _seq: True, -1)


def rejected_reasons(db: sqlite3.Connection) -> dict[int, str]:
    """Seq -> the centre's reason, for every reading kept aside in a store file."""
    return {
        seq: reason
        for a, b, reason in db.execute(_REJECTED_RANGES)
        for seq in range(a, b + 1)
    }


def last_issued_seq(db: sqlite3.Connection) -> int:
    """The last seq a store file has handed out (0 for a new one)."""
    return _last_seq(db)


def _last_seq(db: sqlite3.Connection) -> int:
    row = db.execute(_GET_LAST_SEQ).fetchone()
    return int(row[0]) if row else 0


def _set_last_seq(db: sqlite3.Connection, seq: int) -> None:
    db.execute(_SET_LAST_SEQ, (seq,))


def _bump(db: sqlite3.Connection, name: str, amount: int) -> None:
    db.execute(_ADD_TO_COUNTER, (name, amount))


def _keep_aside(db: sqlite3.Connection, rows: list[NewRow], keep_aside: tuple[str, str], now: float) -> None:
    db.executemany(_KEEP_ASIDE, [(*row, *keep_aside, now) for row in rows])


def _rejected_batches(db: sqlite3.Connection) -> list[RejectedBatch]:
    rows = db.execute(_REJECTED_BATCHES).fetchall()
    return [RejectedBatch(b, r, int(n), int(lo), int(hi), float(at)) for b, r, n, lo, hi, at in rows]


def _rejected_readings(db: sqlite3.Connection, batch_id: str, limit: int = -1) -> list[StoredReading]:
    cur = db.execute(_REJECTED_BODIES, (batch_id,))
    return _readings(cur, lambda _seq: True, limit)


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
            version = int(self._db.execute(_GET_SCHEMA_VERSION).fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from exc
        if version != SCHEMA_VERSION:
            self._db.close()
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: store schema version {version} was written by an older agent; start the agent "
                    f"once (it migrates the store to version {SCHEMA_VERSION} on start, losing nothing), "
                    "then run this again"
                )
            raise StoreError(
                f"{path}: store schema version {version} was written by a newer agent; this one reads "
                f"version {SCHEMA_VERSION}: use the edge-agent of the release that wrote it"
            )

    def summary(self) -> dict[str, object]:
        """Depth per class, size, oldest waiting reading, drops and readings kept aside."""
        db = self._db
        depth = {Priority(p).name.lower(): int(n)
                 for p, n in db.execute(_DEPTH_BY_PRIORITY)}
        oldest = db.execute(_MIN_TS).fetchone()[0]
        counters = {n: int(v) for n, v in db.execute(_ALL_COUNTERS)}
        pages = int(db.execute(_GET_PAGE_COUNT).fetchone()[0]) * int(db.execute(_GET_PAGE_SIZE).fetchone()[0])
        return {
            "path": str(self.path),
            "waiting": sum(depth.values()),
            "waiting_by_priority": depth,
            "oldest_waiting_ts": oldest,
            "last_seq": _last_seq(db),
            "bytes": pages,
            "dropped": {k.removeprefix("dropped_"): v for k, v in counters.items() if k.startswith("dropped_")},
            "rejected_readings": int(db.execute(_REJECTED_WAITING).fetchone()[0]),
            "rejected_batches": int(db.execute(_REJECTED_BATCH_COUNT).fetchone()[0]),
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
        db.execute(_BEGIN_WRITE)
        try:
            for bid in batch_ids:
                # The seqs were removed from polls when set aside: no row there can clash with them.
                (n,) = db.execute(_REJECTED_WAITING_OF_BATCH, (bid,)).fetchone()
                db.execute(_RESEND_BATCH, (bid,))
                moved += int(n)
                db.execute(_DELETE_REJECTED_BATCH, (bid,))
            for name, amount in (("rejected", -moved), ("resend_generation", 1)):
                _bump(db, name, amount)
            db.execute(_COMMIT)
        except BaseException:
            db.execute(_ROLLBACK)
            raise
        return moved

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
