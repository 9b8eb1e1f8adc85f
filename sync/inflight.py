"""The uplink's in-flight window: batches sent and not yet answered, their acks, rejections and resends.

Rows stay in the store until the receiver's :class:`~sync.wire_msgs.Ack` for their batch arrives, signed
by one of the centre's keys (``centre_public_keys``) and naming the batch's id and the SHA-256 of
its payload; an ack or rejection that is unsigned, wrongly signed, for another batch or a replay
of an old one is counted (``kbe_sync_untrusted_down_total``), logged and ignored. A
batch unacknowledged after ``ack_timeout_s`` is sent again (same bytes, same batch id; the centre
deduplicates on ``(site_id, seq)``). A :class:`~sync.wire_msgs.Rejection` moves the batch's rows aside
with :meth:`Store.reject`: counted, reported in the retained status, never deleted silently and
never resent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kernel.errors import SignatureError
from kernel.metrics import Metrics
from kernel.ratelog import RateLimitedLog
from sync.ed25519 import AnyPublicKey
from sync.mqtt import MqttLink
from sync.signing import open_down
from sync.store import Store
from sync.wire_base import Topics, WireError, unpack_frame
from sync.wire_msgs import Rejection

if TYPE_CHECKING:
    from sync.config import SyncConfig

log = logging.getLogger("kbe.sync")

_MAX_INCOMING = 10_000  # acks waiting for the event loop; an ack lost here only means a resend


@dataclass
class InFlight:
    """A batch sent and not yet acknowledged."""

    batch_id: str
    seqs: list[int]
    frame: bytes
    digest: str
    sent_mono: float
    first_sent_mono: float
    sends: int = 1


class InFlightWindow:
    """Tracks the batches in flight, matches the centre's answers to them and resends overdue ones.

    ``notify`` wakes the uploader's loop (after an ack frees room); ``on_rejected`` asks for the
    retained status to go out soon (after a rejection).
    """

    def __init__(
        self,
        cfg: SyncConfig,
        site_id: str,
        store: Store,
        metrics: Metrics,
        centre_keys: list[AnyPublicKey],
        topics: Topics,
        notify: Callable[[], None],
        on_rejected: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.site_id = site_id
        self.store = store
        self.metrics = metrics
        self.centre_keys = centre_keys
        self.topics = topics
        self._notify = notify
        self._on_rejected = on_rejected
        self._untrusted_log = RateLimitedLog(log, 60.0)
        self.batches: dict[str, InFlight] = {}
        """Batches sent and not yet answered, by batch id."""
        self.sent: set[int] = set()
        """Seqs of those batches (the composer skips them)."""
        self.incoming: collections.deque[bytes] = collections.deque(maxlen=_MAX_INCOMING)
        self.rejected_batches = 0
        self.last_rejection: str | None = None
        self.acked_readings = 0

    def reset(self) -> None:
        """After a restart of the uploader, everything still in the store is unsent as far as we know."""
        self.batches.clear()
        self.sent.clear()
        self.incoming.clear()

    def receive(self, payload: bytes) -> None:
        """Queue an ack or rejection frame for :meth:`handle_incoming`; safe from the network thread."""
        self.incoming.append(payload)

    def add(self, batch_id: str, seqs: list[int], frame: bytes, digest: str) -> None:
        """Record a batch just published."""
        now = time.monotonic()
        self.batches[batch_id] = InFlight(batch_id, seqs, frame, digest, now, now)
        self.sent.update(seqs)
        self.metrics.inc("kbe_sync_batches_sent_total")
        self.metrics.inc("kbe_sync_readings_sent_total", len(seqs))
        self.metrics.set("kbe_sync_in_flight", len(self.batches))

    def session_lost(self) -> None:
        """The broker lost our session: whatever was in flight may never have left it."""
        for inf in self.batches.values():
            inf.sent_mono = -1e18
            inf.sends = 0  # this resend is not a timeout: keep the backoff at its start

    def resend_overdue(self, link: MqttLink, now: float) -> None:
        """Publish again every batch unanswered for its (backed-off) ``ack_timeout_s``."""
        for inf in self.batches.values():
            # 1, 2, 4 ... 16 x ack_timeout_s: a receiver down for hours does not eat a slow link.
            if now - inf.sent_mono >= self.cfg.ack_timeout_s * min(2 ** (inf.sends - 1), 16):
                link.publish(self.topics.batch, inf.frame, qos=1)
                inf.sent_mono = now
                inf.sends += 1
                self.metrics.inc("kbe_sync_batches_resent_total")
                log.info("batch %s unacknowledged: sent again (send %d)", inf.batch_id, inf.sends)

    async def handle_incoming(self) -> None:
        """Verify and apply the queued answers: acks delete their rows, rejections set them aside."""
        acked: list[InFlight] = []
        while self.incoming:
            data = self.incoming.popleft()
            try:
                msg = open_down(data, self.centre_keys)
            except SignatureError as exc:
                self._untrusted("unsigned" if "unsigned" in str(exc) else "bad-signature", data, str(exc))
                continue
            except WireError as exc:
                self._untrusted("malformed", data, str(exc))
                continue
            inf = self.batches.get(msg.batch_id)
            if msg.site_id != self.site_id or inf is None or inf.digest != msg.batch_sha256:
                # Signed by the centre but not for a batch in flight: a replay, or an ack of a resend.
                self.metrics.inc("kbe_sync_unmatched_acks_total")
                log.debug("ignoring a %s for batch %s: not in flight with that content", msg.type, msg.batch_id)
                continue
            if isinstance(msg, Rejection):
                await self._handle_rejection(msg)
                continue
            del self.batches[msg.batch_id]
            log.debug("batch %s acked: %d stored, %d duplicates", msg.batch_id, msg.stored, msg.duplicates)
            acked.append(inf)
        if acked:
            await self._delete_acked(acked)

    async def _delete_acked(self, acked: list[InFlight]) -> None:
        """One store transaction for every ack that arrived together."""
        seqs = [s for inf in acked for s in inf.seqs]
        await asyncio.to_thread(self.store.ack, seqs)
        self.sent.difference_update(seqs)
        self.acked_readings += len(seqs)
        self.metrics.inc("kbe_sync_readings_acked_total", len(seqs))
        self.metrics.inc("kbe_sync_batches_acked_total", len(acked))
        for inf in acked:
            self.metrics.observe("kbe_sync_ack_latency_seconds", time.monotonic() - inf.first_sent_mono)
        self.metrics.set("kbe_sync_in_flight", len(self.batches))
        self._notify()

    def _untrusted(self, reason: str, data: bytes, detail: str) -> None:
        """An ack or rejection the centre's keys do not vouch for: counted, logged (rate-limited), ignored."""
        self.metrics.inc("kbe_sync_untrusted_down_total", labels={"reason": reason})
        claimed = ""
        with contextlib.suppress(WireError):
            claimed = unpack_frame(data).msg_id[:80]
        self._untrusted_log.warning(
            reason, "ignored a %s message on %s (%d bytes, claims batch %r): %s; nothing deleted or set aside",
            reason, self.topics.ack, len(data), claimed, detail,
        )  # fmt: skip

    async def _handle_rejection(self, rej: Rejection) -> None:
        """Set the rejected batch's rows aside (:meth:`Store.reject`), count it and report it in the status."""
        inf = self.batches.pop(rej.batch_id)
        reason = f"{rej.reason}: {rej.detail}" if rej.detail else rej.reason
        moved = await asyncio.to_thread(self.store.reject, inf.seqs, inf.batch_id, reason)
        self.sent.difference_update(inf.seqs)
        self.rejected_batches += 1
        self.last_rejection = f"{inf.batch_id}: {reason}"
        self.metrics.inc("kbe_sync_batches_rejected_total", labels={"reason": rej.reason})
        self.metrics.inc("kbe_sync_readings_rejected_total", moved)
        self.metrics.set("kbe_sync_in_flight", len(self.batches))
        # Store.reject has logged it (once): "centre rejected batch ... readings kept aside".
        self._on_rejected()
