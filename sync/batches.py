"""Batch composition for the uplink: which stored rows go into the next batch, and its signed frame.

A batch holds at most ``batch.max_count`` readings (more under a backlog, up to
``batch.backlog_max_count``) and ``batch.max_bytes`` compressed bytes:

1. up to ``live_share`` of the batch from the *newest* telemetry appended since the last batch
   (or since the uploader started), so a long drain after an outage never starves live data;
2. then alarms, then events, then the *oldest* unsent telemetry, each oldest first.

A batch too big for ``max_bytes`` is cut to fewer readings keeping alarms, then events, then the
live share, then the oldest telemetry, so a telemetry backlog never holds an alarm back.

:class:`BatchComposer` only *reads* the store; it runs in a worker thread. It skips the rows of
batches in flight (the ``sent`` set it shares with :class:`sync.inflight.InFlightWindow`) and keeps
one cursor per priority class, advanced only when a batch is really sent (:meth:`BatchComposer.advance`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kernel.clock import Clock
from kernel.readings import Priority
from sync import rowcodec
from sync.rowcodec import Chunk
from sync.signing import Signer
from sync.store import Store
from sync.wire_base import compress, content_hash, unpack_frame
from sync.wire_batch import batch_json_chunks
from sync.wire_msgs import BufferStats, build

if TYPE_CHECKING:
    from sync.config import SyncConfig

Encoded = tuple[bytes, str, list[int], str]
"""A batch as sent: frame, batch id, seqs and the SHA-256 of its payload."""


@dataclass
class Composed:
    """A batch ready to send and the stream positions it would advance."""

    rows: list[Chunk]
    """Stored rows, or parts of them (``sync.rowcodec.Chunk``), in seq order."""
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

    def _unsent(self, a: int, b: int, skip: set[int]) -> list[tuple[int, int]]:
        """The runs of seqs in ``a..b`` neither in flight nor in ``skip``."""
        sent = self.sent
        if not sent and not skip:
            return [(a, b)]
        runs: list[tuple[int, int]] = []
        start = None
        for seq in range(a, b + 1):
            if seq in sent or seq in skip:
                if start is not None:
                    runs.append((start, seq - 1))
                    start = None
            elif start is None:
                start = seq
        if start is not None:
            runs.append((start, b))
        return runs

    def _take(self, prio: Priority, want: int, skip: set[int], cursor: int) -> tuple[list[Chunk], int]:
        """Up to ``want`` unsent readings of one class after ``cursor``, oldest first (stored rows, the
        last one cut if it holds more than is wanted)."""
        out: list[Chunk] = []
        got = 0
        while got < want:
            chunks = self.store.pending_chunks(want - got, cursor, prio)
            if not chunks:
                break
            for chunk in chunks:
                for lo, hi in self._unsent(max(chunk[0], cursor + 1), chunk[1], skip):
                    piece = rowcodec.clip(chunk, lo, min(hi, lo + want - got - 1))
                    out.append(piece)
                    got += piece[1] - piece[0] + 1
                    if got == want:
                        return out, piece[1]
                cursor = chunk[1]
        return out, cursor

    def _take_live(self, want: int, above: int) -> list[Chunk]:
        """Up to ``want`` of the newest unsent telemetry readings past ``above``, oldest first."""
        out: list[Chunk] = []
        got = 0
        for chunk in self.store.newest_chunks(want, Priority.TELEMETRY, above):
            for lo, hi in reversed(self._unsent(max(chunk[0], above + 1), chunk[1], set())):
                piece = rowcodec.clip(chunk, max(lo, hi - (want - got) + 1), hi)
                out.append(piece)
                got += piece[1] - piece[0] + 1
                if got == want:
                    return out[::-1]
        return out[::-1]

    def compose(self, max_count: int) -> Composed | None:
        """The next batch's rows (live share first, then by priority), or None when nothing is due yet."""
        live_n = int(max_count * self.cfg.live_share)
        cursors = dict(self.cursors)
        live: list[Chunk] = []
        if live_n:
            # Only rows appended since the last live take (or since run() began) count as live;
            # older ones belong to the backlog, so a drain does not re-read the in-flight tail.
            live = self._take_live(live_n, max(self.live_top, cursors[Priority.TELEMETRY]))
        live_seqs = set(rowcodec.seqs_of(live))
        rows: list[Chunk] = []
        got = 0
        room = max_count - len(live_seqs)
        for prio in Priority:
            taken, cursors[prio] = self._take(prio, room - got, live_seqs, cursors[prio])
            rows.extend(taken)
            got += rowcodec.count(taken)
        rows.extend(live)
        if not rows:
            self.partial_since = None
            return None
        full = got + len(live_seqs) >= max_count
        alarm = int(Priority.ALARM)
        urgent = any(r[2] == alarm for r in rows)
        if not (full or urgent or self.flushing):
            now = time.monotonic()
            if self.partial_since is None:
                self.partial_since = now
            if now - self.partial_since < self.cfg.batch.max_age_s:
                return None
        rows.sort()  # by seq: the pieces never overlap, so the rest of a row is never compared
        return Composed(rows, cursors, live_seqs, max(live_seqs, default=self.live_top))

    def new_batch_id(self) -> str:
        """A batch id unique to this process: ``<random boot id>-<counter>``."""
        self._counter += 1
        return f"{self._boot}-{self._counter}"

    def buffer_stats(self) -> BufferStats:
        """The store's fill state as the wire reports it (in batches and the status)."""
        s = self.store.stats()
        return build(
            BufferStats,
            depth=s.depth,
            bytes=s.bytes_used,
            oldest_ts=s.oldest_ts,
            dropped={p.name: n for p, n in s.dropped.items()},
            rejected=s.rejected,
        )

    def encode_within_bytes(self, composed: Composed) -> Encoded | None:
        """Frame, batch id, seqs and payload hash of the composed batch, cut until the frame fits ``max_bytes``."""
        rows = composed.rows
        n = rowcodec.count(rows)
        stats = self.buffer_stats()
        while rows:
            batch_id = self.new_batch_id()
            doc = batch_json_chunks(self.site_id, batch_id, self.clock.now(), rows, stats)
            frame = self.signer.frame(compress(doc), batch_id)
            self._bytes_per_reading = len(frame) / n
            if len(frame) <= self.cfg.batch.max_bytes or n == 1:
                if rows is not composed.rows:
                    self._shrink_cursors(composed, rows)
                # The hash of the payload as framed and signed: what the centre's answer must name.
                return frame, batch_id, rowcodec.seqs_of(rows), content_hash(unpack_frame(frame).payload)
            n = max(1, int(n * self.cfg.batch.max_bytes / len(frame) * 0.9))
            rows = self._keep(composed, n)
        return None

    def _keep(self, composed: Composed, n: int) -> list[Chunk]:
        """The ``n`` readings of ``composed`` a cut for size keeps, in seq order: alarms, then events,
        then the live share of ``n``, then the oldest telemetry, then more live rows; each oldest first.

        So a cut never pushes an alarm behind an event or telemetry, nor an event behind telemetry,
        and live data keeps its share of a cut batch as of a full one."""
        live = [r for r in composed.rows if r[0] in composed.live]
        classes = [[r for r in composed.rows if r[2] == p and r[0] not in composed.live] for p in Priority]
        alarms, events, backlog = classes
        room = n
        keep = []
        for rows in (alarms, events):
            k = min(rowcodec.count(rows), room)
            keep.append(k)
            room -= k
        n_live = min(rowcodec.count(live), int(n * self.cfg.live_share), room)
        n_backlog = min(rowcodec.count(backlog), room - n_live)
        n_live = min(rowcodec.count(live), room - n_backlog)
        kept = [
            *rowcodec.cut(alarms, keep[0]),
            *rowcodec.cut(events, keep[1]),
            *rowcodec.cut(backlog, n_backlog),
            *rowcodec.cut(live, n_live),
        ]
        kept.sort()  # by seq: the pieces never overlap
        return kept

    def _shrink_cursors(self, composed: Composed, kept: list[Chunk]) -> None:
        """After cutting a batch for size, move each class's cursor back to what was really taken."""
        composed.rows = kept
        for prio in Priority:
            last = [r[1] for r in kept if r[2] == prio and r[0] not in composed.live]
            composed.cursors[prio] = max(last) if last else self.cursors[prio]
        composed.live_top = max((r[1] for r in kept if r[0] in composed.live), default=self.live_top)
        # Rows cut off are not marked sent, so they are taken again by a later batch.
