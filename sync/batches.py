"""Batch composition for the uplink: which stored rows go into the next batch, and its signed frame.

A batch holds at most ``batch.max_count`` readings (more under a backlog, up to
``batch.backlog_max_count``) and ``batch.max_bytes`` compressed bytes:

1. up to ``live_share`` of the batch from the *newest* telemetry appended since the last batch
   (or since the uploader started), so a long drain after an outage never starves live data;
2. then alarms, then events, then the *oldest* unsent telemetry, each oldest first.

:class:`BatchComposer` only *reads* the store; it runs in a worker thread. It skips the rows of
batches in flight (the ``sent`` set it shares with :class:`sync.inflight.InFlightWindow`) and keeps
one cursor per priority class, advanced only when a batch is really sent (:meth:`BatchComposer.advance`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from kernel.clock import Clock
from kernel.readings import Priority
from sync.config import SyncConfig
from sync.signing import Signer
from sync.store import Store
from sync.wire import BufferStats, StoredRow, batch_json_rows, compress, content_hash, unpack_frame

Encoded = tuple[bytes, str, list[int], str]
"""A batch as sent: frame, batch id, seqs and the SHA-256 of its payload."""


@dataclass
class Composed:
    """A batch ready to send and the stream positions it would advance."""

    rows: list[StoredRow]
    cursors: dict[Priority, int]
    live: set[int] = field(default_factory=set)
    live_top: int = 0


class BatchComposer:
    """Takes the next batch's rows from the store by priority and encodes it within ``max_bytes``."""

    def __init__(
        self, cfg: SyncConfig, site_id: str, store: Store, clock: Clock, signer: Signer, sent: set[int]
    ) -> None:
        self.cfg = cfg
        self.site_id = site_id
        self.store = store
        self.clock = clock
        self.signer = signer
        self.sent = sent
        """Seqs of the batches in flight (shared with the in-flight window): never taken again."""
        self.cursors: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self.live_top = 0
        self.partial_since: float | None = None
        self.flushing = False
        """While set, a partial batch goes out at once instead of waiting ``batch.max_age_s``."""
        self._boot = os.urandom(4).hex()
        self._counter = 0
        self._bytes_per_reading = 0.0  # of the last batch framed: bounds a backlog batch by max_bytes

    def reset(self) -> None:
        """After a restart of the uploader: start every class over, live data from the store's newest seq."""
        self.cursors = dict.fromkeys(Priority, 0)
        self.live_top = self.store.stats().last_seq
        self.partial_since = None

    def rewind(self) -> None:
        """Look at every row again (rows put back by ``edge-agent store resend`` sit below the cursors)."""
        self.cursors = dict.fromkeys(Priority, 0)

    def advance(self, composed: Composed) -> None:
        """Record that ``composed`` was sent: its cursors and live top become the stream positions."""
        self.cursors.update(composed.cursors)
        self.live_top = max(self.live_top, composed.live_top)
        self.partial_since = None

    def batch_count(self) -> int:
        """Readings per batch now: ``max_count`` while the uplink keeps up; under a backlog, bigger
        batches (up to ``backlog_max_count`` and what ``max_bytes`` holds at the last batch's
        compressed bytes per reading), so per-batch costs (signature, round trip, the centre's
        transaction, the ack) are shared by more readings and throughput plateaus instead of collapsing."""
        b = self.cfg.batch
        waiting = self.store.depth()
        if waiting <= b.max_count * self.cfg.max_in_flight or b.backlog_max_count <= b.max_count:
            return b.max_count
        want = min(b.backlog_max_count, waiting // self.cfg.max_in_flight)
        if self._bytes_per_reading > 0:
            want = min(want, int(b.max_bytes * 0.9 / self._bytes_per_reading))
        return max(b.max_count, want)

    def prepare(self) -> tuple[Composed, Encoded] | None:
        """Compose and encode the next batch (one worker-thread hop)."""
        composed = self.compose(self.batch_count())
        if composed is None:
            return None
        encoded = self.encode_within_bytes(composed)
        return None if encoded is None else (composed, encoded)

    def _take(self, prio: Priority, want: int, skip: set[int], cursor: int) -> tuple[list[StoredRow], int]:
        """Up to ``want`` unsent readings of one class after ``cursor``, oldest first (raw rows)."""
        out: list[StoredRow] = []
        sent = self.sent
        while len(out) < want:
            rows = self.store.pending_rows(want - len(out) + 64, cursor, prio)
            if not rows:
                break
            if not sent and not skip and len(rows) <= want - len(out):
                out.extend(rows)  # the common case of a drain: nothing of these is in flight
                cursor = rows[-1][0]
                continue
            for r in rows:
                seq = r[0]
                cursor = seq
                if seq in sent or seq in skip:
                    continue
                out.append(r)
                if len(out) == want:
                    break
        return out, cursor

    def compose(self, max_count: int) -> Composed | None:
        """The next batch's rows (live share first, then by priority), or None when nothing is due yet."""
        live_n = int(max_count * self.cfg.live_share)
        cursors = dict(self.cursors)
        live: list[StoredRow] = []
        if live_n:
            # Only rows appended since the last live take (or since run() began) count as live;
            # older ones belong to the backlog, so a drain does not re-read the in-flight tail.
            above = max(self.live_top, cursors[Priority.TELEMETRY])
            newest = self.store.newest_rows(live_n, Priority.TELEMETRY, above)
            live = [r for r in newest if r[0] not in self.sent]
        live_seqs = {r[0] for r in live}
        rows: list[StoredRow] = []
        room = max_count - len(live)
        for prio in Priority:
            got, cursors[prio] = self._take(prio, room - len(rows), live_seqs, cursors[prio])
            rows.extend(got)
        rows.extend(live)
        if not rows:
            self.partial_since = None
            return None
        full = len(rows) >= max_count
        alarm = int(Priority.ALARM)
        urgent = any(r[1] == alarm for r in rows)
        if not (full or urgent or self.flushing):
            now = time.monotonic()
            if self.partial_since is None:
                self.partial_since = now
            if now - self.partial_since < self.cfg.batch.max_age_s:
                return None
        rows.sort()  # by seq: seqs are unique, so the rest of a row is never compared
        return Composed(rows, cursors, live_seqs, max(live_seqs, default=self.live_top))

    def new_batch_id(self) -> str:
        """A batch id unique to this process: ``<random boot id>-<counter>``."""
        self._counter += 1
        return f"{self._boot}-{self._counter}"

    def buffer_stats(self) -> BufferStats:
        """The store's fill state as the wire reports it (in batches and the status)."""
        s = self.store.stats()
        return BufferStats(
            depth=s.depth,
            bytes=s.bytes_used,
            oldest_ts=s.oldest_ts,
            dropped={p.name: n for p, n in s.dropped.items()},
            rejected=s.rejected,
        )

    def encode_within_bytes(self, composed: Composed) -> Encoded | None:
        """Frame, batch id, seqs and payload hash of the composed batch, cut until the frame fits ``max_bytes``."""
        rows = composed.rows
        stats = self.buffer_stats()
        while rows:
            batch_id = self.new_batch_id()
            doc = batch_json_rows(self.site_id, batch_id, self.clock.now(), rows, stats)
            frame = self.signer.frame(compress(doc), batch_id)
            self._bytes_per_reading = len(frame) / len(rows)
            if len(frame) <= self.cfg.batch.max_bytes or len(rows) == 1:
                if len(rows) < len(composed.rows):
                    self._shrink_cursors(composed, rows)
                # The hash of the payload as framed and signed: what the centre's answer must name.
                return frame, batch_id, [r[0] for r in rows], content_hash(unpack_frame(frame).payload)
            keep = max(1, int(len(rows) * self.cfg.batch.max_bytes / len(frame) * 0.9))
            rows = rows[:keep]
        return None

    def _shrink_cursors(self, composed: Composed, kept: list[StoredRow]) -> None:
        """After cutting a batch for size, move each class's cursor back to what was really taken."""
        composed.rows = kept
        for prio in Priority:
            last = [r[0] for r in kept if r[1] == prio and r[0] not in composed.live]
            composed.cursors[prio] = max(last) if last else self.cursors[prio]
        composed.live_top = max((r[0] for r in kept if r[0] in composed.live), default=self.live_top)
        # Rows cut off are not marked sent, so they are taken again by a later batch.
