"""The uplink's retained status: the ``online`` document published every ``keepalive_s`` (and soon after
a change), and the ``offline`` one, both as the broker's will and as the last word of a clean stop.
Each is a frame signed by the site's key (:func:`sync.signing.sign_status`); the will is made and
signed afresh before each connection attempt, so its ``ts`` is the time of that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.version import agent_version
from sync.batches import BatchComposer
from sync.inflight import InFlightWindow
from sync.mqtt import MqttLink
from sync.signing import Signer, sign_status
from sync.store import Store
from sync.wire_base import Topics
from sync.wire_msgs import BufferStats, Status, build

if TYPE_CHECKING:
    from sync.config import SyncConfig

log = logging.getLogger("kbe.sync")


class StatusReporter:
    """Builds and publishes the site's retained status (``<prefix>/<site>/status``) and its offline will."""

    def __init__(
        self,
        cfg: SyncConfig,
        site_id: str,
        store: Store,
        metrics: Metrics,
        clock: Clock,
        topics: Topics,
        window: InFlightWindow,
        composer: BatchComposer,
        signer: Signer,
    ) -> None:
        self.cfg = cfg
        self.signer = signer
        self.site_id = site_id
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.topics = topics
        self.window = window
        self.composer = composer
        self.due = 0.0
        """Monotonic time of the next online status; 0 publishes it at the uploader's next step."""
        self.info: Callable[[], dict[str, Any]] | None = None
        """Extra fields of the online status (config version, health), read at each publish."""
        self.connected_at: float | None = None
        """The ts of the last will made, i.e. when the current (or next) connection began."""

    def document(self, state: str, buffer: BufferStats | None, ts: float | None = None) -> Status:
        """The status for ``state`` (``online`` or ``offline``), stamped ``ts`` (default now)."""
        extra: dict[str, Any] = {}
        if state == "online" and self.info is not None:
            try:
                extra = self.info()
            except Exception:  # the status must go out even if a field cannot be read
                log.debug("status_info failed", exc_info=True)
        return build(
            Status,
            site_id=self.site_id,
            state="online" if state == "online" else "offline",
            ts=self.clock.now() if ts is None else ts,
            connected_at=self.connected_at,
            buffer=buffer,
            in_flight=len(self.window.batches),
            rejected_batches=self.window.rejected_batches,
            last_rejection=self.window.last_rejection,
            agent_version=agent_version(),
            **extra,
        )

    def frame(self, state: str, buffer: BufferStats | None) -> bytes:
        """The signed frame of the status for ``state``: what goes on the status topic."""
        return sign_status(self.document(state, buffer), self.signer)

    def will(self) -> bytes:
        """The signed ``offline`` status the broker publishes if the site vanishes; made at each connect
        attempt, its ``ts`` and ``connected_at`` that attempt's time (the online statuses that follow
        carry the same ``connected_at``)."""
        now = self.clock.now()
        self.connected_at = now
        return sign_status(self.document("offline", None, ts=now), self.signer)

    async def publish(self, link: MqttLink | None, connected: bool) -> None:
        """Publish the online status (retained) and schedule the next one ``keepalive_s`` later."""
        if await asyncio.to_thread(self.store.resend_requested):
            # Rows put back by `edge-agent store resend` sit below the cursors: look at everything again.
            self.composer.rewind()
            log.info("rejected readings were put back for sending; they go out with the next batches")
        buffer = await asyncio.to_thread(self.composer.buffer_stats)
        if link is not None and connected:
            link.publish(self.topics.status, self.frame("online", buffer), qos=1, retain=True)
        self.due = time.monotonic() + self.cfg.keepalive_s

    def say_offline_and_stop(self, link: MqttLink | None) -> None:
        """Publish the offline status (waiting up to 2 s for it) and stop the link; blocking."""
        if link is None:
            return
        if link.connected:
            info = link.publish(self.topics.status, self.frame("offline", None), qos=1, retain=True)
            with contextlib.suppress(Exception):
                info.wait_for_publish(2.0)
        link.stop()
        self.metrics.set("kbe_sync_connected", 0)
