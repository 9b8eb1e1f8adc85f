"""The site's uplink: reads the store, sends signed batches, deletes rows only on the centre's ack.

The uploader only *reads* the store (plus ``ack``/``reject``), so acquisition never waits on the
network. A batch is composed as follows, at most ``batch.max_count`` readings and
``batch.max_bytes`` compressed bytes:

1. up to ``live_share`` of the batch from the *newest* telemetry appended since the last batch
   (or since the uploader started), so a long drain after an outage never starves live data;
2. then alarms, then events, then the *oldest* unsent telemetry, each oldest first.

Rows stay in the store until the receiver's :class:`~sync.wire.Ack` for their batch arrives, signed
by one of the centre's keys (``centre_public_keys``) and naming the batch's id and the SHA-256 of
its payload; an ack or rejection that is unsigned, wrongly signed, for another batch or a replay
of an old one is counted (``kbe_sync_untrusted_down_total``), logged and ignored. A
batch unacknowledged after ``ack_timeout_s`` is sent again (same bytes, same batch id; the centre
deduplicates on ``(site_id, seq)``). At most ``max_in_flight`` batches are unacknowledged. A
:class:`~sync.wire.Rejection` moves the batch's rows aside with :meth:`Store.reject`: counted,
reported in the retained status, never deleted silently and never resent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kernel.clock import Clock
from kernel.errors import SignatureError, SyncError
from kernel.metrics import Metrics
from kernel.ratelog import RateLimitedLog
from kernel.readings import Priority
from sync.config import SyncConfig
from sync.mqtt import LinkOptions, MqttLink
from sync.signing import Signer, load_public_keys, open_down
from sync.store import Store
from sync.wire import (
    BufferStats,
    CommandReply,
    Rejection,
    Status,
    StoredRow,
    Topics,
    WireError,
    batch_json_rows,
    compress,
    content_hash,
    unpack_frame,
)

log = logging.getLogger("kbe.sync")

CommandHandler = Callable[[str, bytes], None]

_MAX_INCOMING = 10_000  # acks waiting for the event loop; an ack lost here only means a resend


def agent_version() -> str:
    """The installed distribution's version, or empty."""
    try:
        from importlib.metadata import version

        return version("kinhbac-edge")
    except Exception:
        return ""


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


@dataclass
class Composed:
    """A batch ready to send and the stream positions it would advance."""

    rows: list[StoredRow]
    cursors: dict[Priority, int]
    live: set[int] = field(default_factory=set)
    live_top: int = 0


class Uploader:
    """Sends the store's readings to the centre; run it as a supervised task (``run()``)."""

    def __init__(
        self,
        cfg: SyncConfig,
        site_id: str,
        store: Store,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        signer: Signer | None = None,
        centre_keys: list[Ed25519PublicKey] | None = None,
    ) -> None:
        self.cfg = cfg
        self.site_id = site_id
        self.store = store
        self.metrics = metrics or Metrics()
        self.clock = clock or Clock()
        self.signer = signer or Signer.from_file(cfg.signing_key_file)
        self.centre_keys = centre_keys if centre_keys is not None else load_public_keys(cfg.centre_public_keys)
        self._untrusted_log = RateLimitedLog(log, 60.0)
        self.topics = Topics(cfg.topic_prefix, site_id)
        self.client_id = cfg.client_id or f"kbe-{site_id}"
        self._boot = os.urandom(4).hex()
        self._counter = 0
        self._bytes_per_reading = 0.0  # of the last batch framed: bounds a backlog batch by max_bytes
        self.in_flight: dict[str, InFlight] = {}
        self._sent: set[int] = set()
        self._cursors: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._live_top = 0
        self._partial_since: float | None = None
        self._incoming: collections.deque[bytes] = collections.deque(maxlen=_MAX_INCOMING)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: MqttLink | None = None
        self._connected_changed = False
        self._session_present = True
        self._flushing = False
        self._status_due = 0.0
        self.rejected_batches = 0
        self.last_rejection: str | None = None
        self.acked_readings = 0
        self._command_handler: CommandHandler | None = None
        self.status_info: Callable[[], dict[str, Any]] | None = None
        """Extra fields of the online status (config version, health), read at each publish."""
        self._describe_metrics()

    # -- public API -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and upload until cancelled. May be called again after it raised (supervisor restart)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._reset_streams()
        self._link = self._make_link()
        if self.cfg.broker.startswith("mqtt://"):
            log.warning("plaintext MQTT to %s (sync.allow_plaintext): readings and credentials cross the "
                        "network unencrypted", self.cfg.broker)  # fmt: skip
        self._link.start()
        try:
            while True:
                await self._step()
                await self._sleep()
        finally:
            link, self._link = self._link, None
            await asyncio.shield(asyncio.to_thread(self._say_offline_and_stop, link))

    async def flush(self, timeout: float) -> bool:
        """Send what is pending and wait for its acks, at most ``timeout`` s, while ``run()`` runs.

        Returns True when the store holds nothing unacknowledged. Rows not acknowledged stay in the
        store for the next start.
        """
        deadline = time.monotonic() + timeout
        self._flushing = True
        self.notify()
        try:
            while time.monotonic() < deadline:
                if not self.in_flight and (await asyncio.to_thread(self.store.stats)).depth == 0:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            self._flushing = False

    def on_commands(self, handler: CommandHandler) -> None:
        """Route frames from ``<prefix>/<site>/down/cmd/+`` to ``handler(kind, frame)`` on the event loop.

        Call before :meth:`run`. The handler verifies the frame (:func:`sync.signing.open_command`)
        and answers with :meth:`reply`.
        """
        self._command_handler = handler

    def reply(self, reply: CommandReply) -> bool:
        """Publish a command reply signed by the site (QoS 1); False when the link is down (the centre will time out)."""
        if self._link is None or not self.connected:
            return False
        self._link.publish(self.topics.cmd_reply, self.signer.small_frame(reply, reply.command_id), qos=1)
        return True

    def status_now(self) -> None:
        """Publish the retained status at the next step (after a change the centre should see soon)."""
        self._status_due = 0.0
        self.notify()

    def notify(self) -> None:
        """Wake the uploader (for example right after an append); safe from any thread."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake.set)

    @property
    def connected(self) -> bool:
        """Whether the broker link is up."""
        return self._link is not None and self._link.connected

    def health(self) -> dict[str, Any]:
        """State for the agent's /health report."""
        link = self._link
        return {
            "connected": self.connected,
            "broker": self.cfg.broker,
            "in_flight": len(self.in_flight),
            "acked_readings": self.acked_readings,
            "rejected_batches": self.rejected_batches,
            "last_rejection": self.last_rejection,
            "connect_failures": link.connect_failures if link else 0,
            "last_error": link.last_error if link else "",
        }

    # -- the loop ---------------------------------------------------------------------------------

    def _poll_interval(self) -> float:
        return max(0.02, min(0.25, self.cfg.batch.max_age_s / 2))

    async def _sleep(self) -> None:
        assert self._wake is not None
        if self._wake.is_set():
            self._wake.clear()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_interval())
        self._wake.clear()

    async def _step(self) -> None:
        await self._handle_incoming()
        if not self.connected:
            return
        now = time.monotonic()
        if self._connected_changed:
            self._connected_changed = False
            if not self._session_present:
                # The broker lost our session: whatever was in flight may never have left it.
                for inf in self.in_flight.values():
                    inf.sent_mono = -1e18
                    inf.sends = 0  # this resend is not a timeout: keep the backoff at its start
            self._status_due = 0.0
        self._resend_overdue(now)
        while len(self.in_flight) < self.cfg.max_in_flight and self.connected:
            sent = await self._send_next()
            await self._handle_incoming()
            if not sent:
                break
        if now >= self._status_due:
            await self._publish_status()

    def _resend_overdue(self, now: float) -> None:
        assert self._link is not None
        for inf in self.in_flight.values():
            # 1, 2, 4 ... 16 x ack_timeout_s: a receiver down for hours does not eat a slow link.
            if now - inf.sent_mono >= self.cfg.ack_timeout_s * min(2 ** (inf.sends - 1), 16):
                self._link.publish(self.topics.batch, inf.frame, qos=1)
                inf.sent_mono = now
                inf.sends += 1
                self.metrics.inc("kbe_sync_batches_resent_total")
                log.info("batch %s unacknowledged: sent again (send %d)", inf.batch_id, inf.sends)

    def _batch_count(self) -> int:
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

    def _prepare(self) -> tuple[Composed, tuple[bytes, str, list[int], str]] | None:
        """Compose and encode the next batch (one worker-thread hop)."""
        composed = self._compose(self._batch_count())
        if composed is None:
            return None
        encoded = self._encode_within_bytes(composed)
        return None if encoded is None else (composed, encoded)

    async def _send_next(self) -> bool:
        prepared = await asyncio.to_thread(self._prepare)
        if prepared is None:
            return False
        composed, (frame, batch_id, seqs, digest) = prepared
        if not self.connected or self._link is None:
            return False
        self._link.publish(self.topics.batch, frame, qos=1)
        now = time.monotonic()
        self.in_flight[batch_id] = InFlight(batch_id, seqs, frame, digest, now, now)
        self._sent.update(seqs)
        self._cursors.update(composed.cursors)
        self._live_top = max(self._live_top, composed.live_top)
        self._partial_since = None
        self.metrics.inc("kbe_sync_batches_sent_total")
        self.metrics.inc("kbe_sync_readings_sent_total", len(seqs))
        self.metrics.set("kbe_sync_in_flight", len(self.in_flight))
        return True

    # -- composing batches (runs in a worker thread; reads the store only) ------------------------

    def _take(self, prio: Priority, want: int, skip: set[int], cursor: int) -> tuple[list[StoredRow], int]:
        """Up to ``want`` unsent readings of one class after ``cursor``, oldest first (raw rows)."""
        out: list[StoredRow] = []
        sent = self._sent
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

    def _compose(self, max_count: int) -> Composed | None:
        live_n = int(max_count * self.cfg.live_share)
        cursors = dict(self._cursors)
        live: list[StoredRow] = []
        if live_n:
            # Only rows appended since the last live take (or since run() began) count as live;
            # older ones belong to the backlog, so a drain does not re-read the in-flight tail.
            above = max(self._live_top, cursors[Priority.TELEMETRY])
            newest = self.store.newest_rows(live_n, Priority.TELEMETRY, above)
            live = [r for r in newest if r[0] not in self._sent]
        live_seqs = {r[0] for r in live}
        rows: list[StoredRow] = []
        room = max_count - len(live)
        for prio in Priority:
            got, cursors[prio] = self._take(prio, room - len(rows), live_seqs, cursors[prio])
            rows.extend(got)
        rows.extend(live)
        if not rows:
            self._partial_since = None
            return None
        full = len(rows) >= max_count
        alarm = int(Priority.ALARM)
        urgent = any(r[1] == alarm for r in rows)
        if not (full or urgent or self._flushing):
            now = time.monotonic()
            if self._partial_since is None:
                self._partial_since = now
            if now - self._partial_since < self.cfg.batch.max_age_s:
                return None
        rows.sort()  # by seq: seqs are unique, so the rest of a row is never compared
        return Composed(rows, cursors, live_seqs, max(live_seqs, default=self._live_top))

    def _new_batch_id(self) -> str:
        self._counter += 1
        return f"{self._boot}-{self._counter}"

    def _buffer_stats(self) -> BufferStats:
        s = self.store.stats()
        return BufferStats(
            depth=s.depth,
            bytes=s.bytes_used,
            oldest_ts=s.oldest_ts,
            dropped={p.name: n for p, n in s.dropped.items()},
            rejected=s.rejected,
        )

    def _encode_within_bytes(self, composed: Composed) -> tuple[bytes, str, list[int], str] | None:
        """Frame, batch id, seqs and payload hash of the composed batch, cut until the frame fits ``max_bytes``."""
        rows = composed.rows
        stats = self._buffer_stats()
        while rows:
            batch_id = self._new_batch_id()
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
            composed.cursors[prio] = max(last) if last else self._cursors[prio]
        composed.live_top = max((r[0] for r in kept if r[0] in composed.live), default=self._live_top)
        # Rows cut off are not marked sent, so they are taken again by a later batch.

    # -- incoming acks and rejections -------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        # Network thread: hand over to the event loop.
        if topic == self.topics.ack:
            self._incoming.append(payload)
            self.notify()
            return
        handler, loop = self._command_handler, self._loop
        if handler is not None and loop is not None:
            kind = topic.rsplit("/", 1)[-1]
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(handler, kind, payload)

    def _on_connect(self, session_present: bool) -> None:
        self._session_present = session_present
        self._connected_changed = True
        self.metrics.set("kbe_sync_connected", 1)
        log.info("connected to %s (session %s)", self.cfg.broker, "kept" if session_present else "new")
        if self.cfg.tls is not None and self.cfg.tls.insecure_skip_verify:
            log.warning("connected to %s but does not check that its certificate names that host "
                        "(tls.insecure_skip_verify): anyone with a certificate of the same CA can pose as the "
                        "broker", self.cfg.broker)  # fmt: skip
        self.notify()

    def _on_disconnect(self) -> None:
        self.metrics.set("kbe_sync_connected", 0)
        log.warning("disconnected from %s", self.cfg.broker)
        self.notify()

    async def _handle_incoming(self) -> None:
        acked: list[InFlight] = []
        while self._incoming:
            data = self._incoming.popleft()
            try:
                msg = open_down(data, self.centre_keys)
            except SignatureError as exc:
                self._untrusted("unsigned" if "unsigned" in str(exc) else "bad-signature", data, str(exc))
                continue
            except WireError as exc:
                self._untrusted("malformed", data, str(exc))
                continue
            inf = self.in_flight.get(msg.batch_id)
            if msg.site_id != self.site_id or inf is None or inf.digest != msg.batch_sha256:
                # Signed by the centre but not for a batch in flight: a replay, or an ack of a resend.
                self.metrics.inc("kbe_sync_unmatched_acks_total")
                log.debug("ignoring a %s for batch %s: not in flight with that content", msg.type, msg.batch_id)
                continue
            if isinstance(msg, Rejection):
                await self._handle_rejection(msg)
                continue
            del self.in_flight[msg.batch_id]
            log.debug("batch %s acked: %d stored, %d duplicates", msg.batch_id, msg.stored, msg.duplicates)
            acked.append(inf)
        if acked:
            await self._delete_acked(acked)

    async def _delete_acked(self, acked: list[InFlight]) -> None:
        """One store transaction for every ack that arrived together."""
        seqs = [s for inf in acked for s in inf.seqs]
        await asyncio.to_thread(self.store.ack, seqs)
        self._sent.difference_update(seqs)
        self.acked_readings += len(seqs)
        self.metrics.inc("kbe_sync_readings_acked_total", len(seqs))
        self.metrics.inc("kbe_sync_batches_acked_total", len(acked))
        for inf in acked:
            self.metrics.observe("kbe_sync_ack_latency_seconds", time.monotonic() - inf.first_sent_mono)
        self.metrics.set("kbe_sync_in_flight", len(self.in_flight))
        self.notify()

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
        inf = self.in_flight.pop(rej.batch_id)
        reason = f"{rej.reason}: {rej.detail}" if rej.detail else rej.reason
        moved = await asyncio.to_thread(self.store.reject, inf.seqs, inf.batch_id, reason)
        self._sent.difference_update(inf.seqs)
        self.rejected_batches += 1
        self.last_rejection = f"{inf.batch_id}: {reason}"
        self.metrics.inc("kbe_sync_batches_rejected_total", labels={"reason": rej.reason})
        self.metrics.inc("kbe_sync_readings_rejected_total", moved)
        self.metrics.set("kbe_sync_in_flight", len(self.in_flight))
        # Store.reject has logged it (once): "centre rejected batch ... readings kept aside".
        self._status_due = 0.0
        self.notify()

    # -- status -----------------------------------------------------------------------------------

    def _status(self, state: str, buffer: BufferStats | None) -> bytes:
        extra: dict[str, Any] = {}
        if state == "online" and self.status_info is not None:
            try:
                extra = self.status_info()
            except Exception:  # the status must go out even if a field cannot be read
                log.debug("status_info failed", exc_info=True)
        return Status(
            site_id=self.site_id,
            state="online" if state == "online" else "offline",
            ts=self.clock.now(),
            buffer=buffer,
            in_flight=len(self.in_flight),
            rejected_batches=self.rejected_batches,
            last_rejection=self.last_rejection,
            agent_version=agent_version(),
            **extra,
        ).model_dump_json().encode()

    async def _publish_status(self) -> None:
        if await asyncio.to_thread(self.store.resend_requested):
            # Rows put back by `edge-agent store resend` sit below the cursors: look at everything again.
            self._cursors = dict.fromkeys(Priority, 0)
            log.info("rejected readings were put back for sending; they go out with the next batches")
        buffer = await asyncio.to_thread(self._buffer_stats)
        if self._link is not None and self.connected:
            self._link.publish(self.topics.status, self._status("online", buffer), qos=1, retain=True)
        self._status_due = time.monotonic() + self.cfg.keepalive_s

    def _say_offline_and_stop(self, link: MqttLink | None) -> None:
        if link is None:
            return
        if link.connected:
            info = link.publish(self.topics.status, self._status("offline", None), qos=1, retain=True)
            with contextlib.suppress(Exception):
                info.wait_for_publish(2.0)
        link.stop()
        self.metrics.set("kbe_sync_connected", 0)

    # -- setup ------------------------------------------------------------------------------------

    def _reset_streams(self) -> None:
        # After a restart of run(), everything still in the store is unsent as far as we know.
        self.in_flight.clear()
        self._sent.clear()
        self._cursors = dict.fromkeys(Priority, 0)
        self._live_top = self.store.stats().last_seq
        self._incoming.clear()
        self._partial_since = None

    def _make_link(self) -> MqttLink:
        cfg = self.cfg
        password = None
        if cfg.password_file is not None:
            try:
                password = cfg.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SyncError(f"cannot read password_file {cfg.password_file}: {exc.strerror}") from exc
        tls = cfg.tls
        opts = LinkOptions(
            broker=cfg.broker,
            client_id=self.client_id,
            ca_file=tls.ca_file if tls else None,
            cert_file=tls.cert_file if tls else None,
            key_file=tls.key_file if tls else None,
            insecure_skip_verify=tls.insecure_skip_verify if tls else False,
            username=cfg.username,
            password=password,
            keepalive_s=cfg.keepalive_s,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            max_inflight=cfg.max_in_flight + 4,
            will_topic=self.topics.status,
            will_payload=self._status("offline", None),
        )
        return MqttLink(
            opts,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_message=self._on_message,
            subscriptions=[(self.topics.ack, 1)]
            + ([(self.topics.commands, 1)] if self._command_handler is not None else []),
        )

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("kbe_sync_connected", "1 while the broker link is up.")
        m.describe("kbe_sync_readings_acked_total", "Readings the centre acknowledged as persisted.")
        m.describe("kbe_sync_batches_resent_total", "Batches sent again after ack_timeout_s.")
        m.describe("kbe_sync_batches_rejected_total", "Batches the centre refused (kept aside in the store).")
        m.describe("kbe_sync_in_flight", "Batches sent and not yet acknowledged.")
