"""The receiver's own health: Prometheus metrics and a ``/health`` that turns red when the centre is blind.

Red (HTTP 503, ``ok: false``) when any of these holds, each named in ``reasons`` and in the gauge
``kbe_receiver_unhealthy{reason=...}``:

* ``broker-unreachable``: the MQTT link is down;
* ``site-rejected``: a site's frames were refused within the last ``reject_window_s`` and none of
  its batches has been stored since (a wrong public key, a site on an old protocol);
* ``no-site-reported``: no batch and no status from any site for ``silence_s``.

Everything recovers by itself: the broker comes back, the site's next batch is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from kernel.health_http import HealthServer, ThreadedHealthServer

if TYPE_CHECKING:  # a type only: no msgspec import for it
    from sync.receiver_decode import BatchFields

log = logging.getLogger("kbe.receiver")

PREFIX = "kbe_receiver_"
REASONS = ("broker-unreachable", "site-rejected", "no-site-reported")


class ReceiverHealth:
    """Counts what the receiver does and judges whether the centre can see its sites."""

    def __init__(
        self,
        silence_s: float = 900.0,
        reject_window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        version: str = "",
    ) -> None:
        self.silence_s = silence_s
        self.reject_window_s = reject_window_s
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._started = clock()
        self._connected = False
        self._last_stored: dict[str, float] = {}
        self._last_heard: dict[str, float] = {}  # a stored batch or a status
        self._last_rejected: dict[str, tuple[float, str]] = {}
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Info(f"{PREFIX}build", "Version of the receiver.", registry=r).info({"version": version})
        self.readings_stored = Counter(f"{PREFIX}readings_stored", "Readings newly stored.", ["site"], registry=r)
        self.readings_duplicate = Counter(
            f"{PREFIX}readings_duplicate", "Readings received again and not stored twice.", ["site"], registry=r
        )
        self.batches_stored = Counter(f"{PREFIX}batches_stored", "Batches stored and acknowledged.", ["site"], registry=r)
        self.rejections = Counter(
            f"{PREFIX}rejected", "Frames refused, by site and reason.", ["site", "reason"], registry=r
        )
        self.statuses = Counter(f"{PREFIX}status_messages", "Status messages stored, by site.", ["site"], registry=r)
        self.status_untrusted_total = Counter(
            f"{PREFIX}status_untrusted",
            "Status messages not kept: unsigned, bad-signature, unknown-site or invalid, by site.",
            ["site", "reason"], registry=r,
        )  # fmt: skip
        self.errors = Counter(f"{PREFIX}errors", "Batches that failed to store (resent by the site).", registry=r)
        self.lag = Gauge(
            f"{PREFIX}lag_seconds", "Receive time minus the newest reading's timestamp in the last batch.", ["site"],
            registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            f"{PREFIX}batch_seconds", "Time to verify, store and acknowledge one batch.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )  # fmt: skip
        self.connected_gauge = Gauge(f"{PREFIX}broker_connected", "1 while the MQTT link is up.", registry=r)
        self.unhealthy = Gauge(f"{PREFIX}unhealthy", "1 while this reason makes /health red.", ["reason"], registry=r)
        for reason in REASONS:
            self.unhealthy.labels(reason).set(0)

    def broker_up(self, up: bool) -> None:
        """The MQTT link came up or went down."""
        with self._lock:
            self._connected = up
        self.connected_gauge.set(1 if up else 0)
        if not up:
            log.warning("broker unreachable: /health is red until it is back")

    def stored(self, site: str, batch: BatchFields, stored: int, duplicates: int) -> None:
        """A batch of ``site`` was stored."""
        with self._lock:
            self._last_stored[site] = self._last_heard[site] = self._clock()
        self.batches_stored.labels(site).inc()
        self.readings_stored.labels(site).inc(stored)
        self.readings_duplicate.labels(site).inc(duplicates)
        self.lag.labels(site).set(max(0.0, self._wall() - max(r.ts for r in batch.readings)))

    def reported(self, site: str) -> None:
        """A site published its status (it is alive, even with nothing to send)."""
        with self._lock:
            self._last_heard[site] = self._clock()
        self.statuses.labels(site).inc()

    def status_untrusted(self, site: str, reason: str) -> None:
        """A message on ``site``'s status topic was not signed by it (or is not a status): not a sign of life."""
        self.status_untrusted_total.labels(site, reason).inc()

    def rejected(self, site: str, reason: str) -> None:
        """A frame on ``site``'s topic was refused."""
        with self._lock:
            self._last_rejected[site] = (self._clock(), reason)
        self.rejections.labels(site, reason).inc()

    def report(self) -> dict[str, Any]:
        """The /health document; also sets the ``unhealthy`` gauges."""
        now = self._clock()
        with self._lock:
            connected = self._connected
            stored = dict(self._last_stored)
            heard = dict(self._last_heard)
            rejected = dict(self._last_rejected)
        rejecting = sorted(
            site
            for site, (t, _reason) in rejected.items()
            if now - t < self.reject_window_s and stored.get(site, -1e18) < t
        )
        newest = max(heard.values(), default=self._started)
        silent = now - newest >= self.silence_s
        reasons = {
            "broker-unreachable": not connected,
            "site-rejected": bool(rejecting),
            "no-site-reported": silent,
        }
        for reason, bad in reasons.items():
            self.unhealthy.labels(reason).set(1 if bad else 0)
        return {
            "ok": not any(reasons.values()),
            "reasons": [r for r, bad in reasons.items() if bad],
            "broker_connected": connected,
            "rejecting_sites": {site: rejected[site][1] for site in rejecting},
            "seconds_since_a_site_reported": round(now - newest, 1),
            "sites": {
                site: {
                    "seconds_since_heard": round(now - t, 1),
                    "seconds_since_last_batch": round(now - stored[site], 1) if site in stored else None,
                }
                for site, t in sorted(heard.items())
            },
        }

    def metrics_text(self) -> bytes:
        """Prometheus text exposition of every receiver metric."""
        self.report()  # refresh the unhealthy gauges
        return generate_latest(self.registry)


def health_http(listen: str, health: ReceiverHealth) -> ThreadedHealthServer:
    """``/health`` (JSON, 503 when red) and ``/metrics`` (Prometheus) on ``listen``, in a background
    thread: the agent's HTTP layer (:mod:`kernel.health_http`); ``start()`` binds and serves."""
    server = HealthServer(listen, health.metrics_text, health.report, name="health endpoint")
    return ThreadedHealthServer(server, thread_name="kbe-rx-health")
