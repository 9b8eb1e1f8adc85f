"""The site's uplink: reads the store, sends signed batches, deletes rows only on the centre's ack.

The uploader only *reads* the store (plus ``ack``/``reject``), so acquisition never waits on the
network. :class:`Uploader` owns the broker link and runs the loop; each job lives in its own module:

* :mod:`sync.batches` — which rows go into the next batch (live share, then alarms, events and the
  oldest telemetry; bigger batches under a backlog) and its signed frame within ``batch.max_bytes``;
* :mod:`sync.inflight` — at most ``max_in_flight`` batches unacknowledged; the centre's signed acks
  and rejections matched by batch id and payload hash; resends after ``ack_timeout_s``;
* :mod:`sync.status` — the retained online status and the offline will, signed like the batches;
* :mod:`sync.commands_in` — commands from ``down/cmd/+`` to the agent's handler, and the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernel.clock import Clock
from kernel.errors import SyncError
from kernel.metrics import Metrics
from kernel.version import agent_version
from sync.batches import BatchComposer
from sync.commands_in import CommandHandler, CommandIntake
from sync.ed25519 import AnyPublicKey as Ed25519PublicKey  # no cryptography in the agent process
from sync.inflight import InFlight, InFlightWindow
from sync.mqtt import LinkOptions, MqttLink
from sync.signing import Signer, load_public_keys
from sync.status import StatusReporter
from sync.store import Store
from sync.wire_base import Topics
from sync.wire_msgs import CommandReply

if TYPE_CHECKING:
    from sync.config import SyncConfig

__all__ = ["CommandHandler", "InFlight", "Uploader", "agent_version"]

log = logging.getLogger("kbe.sync")


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
        self.topics = Topics(cfg.topic_prefix, site_id)
        self.client_id = cfg.client_id or f"kbe-{site_id}"
        self.window = InFlightWindow(
            cfg, site_id, store, self.metrics, self.centre_keys, self.topics, self.notify, self.status_now
        )
        self.in_flight: dict[str, InFlight] = self.window.batches
        """Batches sent and not yet acknowledged, by batch id (the window's own dict)."""
        self.batches = BatchComposer(cfg, site_id, store, self.clock, self.signer, self.window.sent)
        self.status = StatusReporter(
            cfg, site_id, store, self.metrics, self.clock, self.topics, self.window, self.batches, self.signer
        )
        self.commands = CommandIntake(self.topics, self.signer)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: MqttLink | None = None
        self._connected_changed = False
        self._session_present = True
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
            await asyncio.shield(asyncio.to_thread(self.status.say_offline_and_stop, link))

    async def flush(self, timeout: float) -> bool:
        """Send what is pending and wait for its acks, at most ``timeout`` s, while ``run()`` runs.

        Returns True when the store holds nothing unacknowledged. Rows not acknowledged stay in the
        store for the next start.
        """
        deadline = time.monotonic() + timeout
        self.batches.flushing = True
        self.notify()
        try:
            while time.monotonic() < deadline:
                if not self.in_flight and (await asyncio.to_thread(self.store.stats)).depth == 0:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            self.batches.flushing = False

    def on_commands(self, handler: CommandHandler) -> None:
        """Route frames from ``<prefix>/<site>/down/cmd/+`` to ``handler(kind, frame)`` on the event loop.

        Call before :meth:`run`. The handler verifies the frame (:func:`sync.signing.open_command`)
        and answers with :meth:`reply`.
        """
        self.commands.handler = handler

    def reply(self, reply: CommandReply) -> bool:
        """Publish a command reply signed by the site (QoS 1); False when the link is down (the centre will time out)."""
        return self.commands.reply(self._link, self.connected, reply)

    def status_now(self) -> None:
        """Publish the retained status at the next step (after a change the centre should see soon)."""
        self.status.due = 0.0
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

    @property
    def status_info(self) -> Callable[[], dict[str, Any]] | None:
        """Extra fields of the online status (config version, health), read at each publish."""
        return self.status.info

    @status_info.setter
    def status_info(self, info: Callable[[], dict[str, Any]] | None) -> None:
        self.status.info = info

    @property
    def acked_readings(self) -> int:
        """Readings the centre acknowledged since the uploader was made."""
        return self.window.acked_readings

    @property
    def rejected_batches(self) -> int:
        """Batches the centre rejected since the uploader was made."""
        return self.window.rejected_batches

    @property
    def last_rejection(self) -> str | None:
        """``<batch id>: <reason>`` of the last rejection, if any."""
        return self.window.last_rejection

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
        await self.window.handle_incoming()
        if not self.connected:
            return
        now = time.monotonic()
        if self._connected_changed:
            self._connected_changed = False
            if not self._session_present:
                self.window.session_lost()
            self.status.due = 0.0
        assert self._link is not None
        self.window.resend_overdue(self._link, now)
        while len(self.in_flight) < self.cfg.max_in_flight and self.connected:
            sent = await self._send_next()
            await self.window.handle_incoming()
            if not sent:
                break
        if now >= self.status.due:
            await self.status.publish(self._link, self.connected)

    async def _send_next(self) -> bool:
        prepared = await asyncio.to_thread(self.batches.prepare)
        if prepared is None:
            return False
        composed, (frame, batch_id, seqs, digest) = prepared
        if not self.connected or self._link is None:
            return False
        self._link.publish(self.topics.batch, frame, qos=1)
        self.window.add(batch_id, seqs, frame, digest)
        self.batches.advance(composed)
        return True

    # -- link callbacks (network thread) ----------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        # Network thread: hand over to the event loop.
        if topic == self.topics.ack:
            self.window.receive(payload)
            self.notify()
            return
        self.commands.deliver(topic, payload, self._loop)

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

    # -- setup ------------------------------------------------------------------------------------

    def _reset_streams(self) -> None:
        # After a restart of run(), everything still in the store is unsent as far as we know.
        self.window.reset()
        self.batches.reset()

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
            will_payload=self.status.will(),
            will_factory=self.status.will,
        )
        return MqttLink(
            opts,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_message=self._on_message,
            subscriptions=[(self.topics.ack, 1), *self.commands.subscriptions()],
        )

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("kbe_sync_connected", "1 while the broker link is up.")
        m.describe("kbe_sync_readings_acked_total", "Readings the centre acknowledged as persisted.")
        m.describe("kbe_sync_batches_resent_total", "Batches sent again after ack_timeout_s.")
        m.describe("kbe_sync_batches_rejected_total", "Batches the centre refused (kept aside in the store).")
        m.describe("kbe_sync_in_flight", "Batches sent and not yet acknowledged.")
