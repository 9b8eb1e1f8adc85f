"""The reference receiver: what the centre runs (or copies) to take batches from the sites.

For every message on ``$share/<group>/<prefix>/+/up/batch`` it checks, in this order: the frame
header, that the topic's site is registered, that the batch is signed, that the signature verifies
against one of the site's registered public keys, that the payload is a valid batch of schema
version 1 for that same site. A batch that passes is persisted in ONE transaction with
``ON CONFLICT (site_id, seq) DO NOTHING`` and only then acknowledged (QoS 1) on
``<prefix>/<site>/down/ack``. Anything else is not stored, is counted, recorded in ``rejections``
and answered with a :class:`~sync.wire.Rejection` on the same topic.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from collections import Counter
from pathlib import Path

import click

from kernel.errors import SignatureError
from sync.mqtt import LinkOptions, MqttLink
from sync.receiver_db import ReceiverDB, open_db
from sync.signing import SiteRegistry, verify_frame
from sync.wire import (
    SCHEMA_VERSION,
    Ack,
    Frame,
    Rejection,
    RejectReason,
    Topics,
    WireError,
    decode_batch,
    peek_batch_ids,
    shared_batch_subscription,
    site_of_topic,
    unpack_frame,
)

log = logging.getLogger("kbe.receiver")


class Receiver:
    """Verifies, persists and acknowledges batches; one instance per receiver process."""

    def __init__(
        self,
        db: ReceiverDB,
        registry: SiteRegistry,
        prefix: str = "kbe",
        name: str = "receiver",
    ) -> None:
        self.db = db
        self.registry = registry
        self.prefix = prefix
        self.name = name
        self.link: MqttLink | None = None
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    def handle(self, topic: str, payload: bytes) -> Ack | Rejection | None:
        """Process one message from the batch topic; publish and return the answer (None: not answered)."""
        try:
            site = site_of_topic(topic)
        except WireError:
            self._count("malformed")
            return None
        with self._lock:
            answer = self._process(site, topic, payload)
        if answer is not None and self.link is not None:
            self.link.publish(Topics(self.prefix, site).ack, answer.model_dump_json().encode(), qos=1)
        return answer

    def _process(self, site: str, topic: str, payload: bytes) -> Ack | Rejection:
        try:
            frame = unpack_frame(payload)
        except WireError as exc:
            return self._reject(site, topic, payload, None, "malformed", str(exc))
        keys = self.registry.keys_for(site)
        if keys is None:
            return self._reject(site, topic, payload, frame, "unknown-site", f"site {site!r}")
        try:
            verify_frame(frame, keys)
        except SignatureError as exc:
            reason: RejectReason = "unsigned" if not frame.signature else "bad-signature"
            return self._reject(site, topic, payload, frame, reason, str(exc))
        try:
            batch = decode_batch(frame)
        except WireError as exc:
            version = _schema_version(frame)
            reason = "schema-version" if version not in (None, SCHEMA_VERSION) else "malformed"
            return self._reject(site, topic, payload, frame, reason, str(exc))
        if batch.site_id != site:
            detail = f"batch says site {batch.site_id!r}, topic says {site!r}"
            return self._reject(site, topic, payload, frame, "site-mismatch", detail)
        stored, dup = self.db.store_batch(batch, self.name)
        self._count("batches_stored")
        self._count("readings_stored", stored)
        self._count("readings_duplicate", dup)
        log.info(
            "%s batch %s: %d readings stored, %d duplicates (seq %d..%d)",
            site, batch.batch_id, stored, dup, batch.first_seq, batch.last_seq,
        )  # fmt: skip
        return Ack(
            site_id=site,
            batch_id=batch.batch_id,
            first_seq=batch.first_seq,
            last_seq=batch.last_seq,
            stored=stored,
            duplicates=dup,
            receiver=self.name,
        )

    def _reject(
        self,
        site: str,
        topic: str,
        payload: bytes,
        frame: Frame | None,
        reason: RejectReason,
        detail: str,
    ) -> Rejection:
        # Only now look inside the untrusted payload, for the ids the site needs to match it.
        bid, first, last = peek_batch_ids(frame) if frame is not None else (None, None, None)
        self._count(f"rejected_{reason}")
        log.warning("rejected a batch from %s (batch %s): %s: %s", site, bid, reason, detail)
        self.db.record_rejection(site, bid, reason, detail[:500], topic, len(payload), self.name)
        return Rejection(
            site_id=site,
            batch_id=bid,
            first_seq=first,
            last_seq=last,
            reason=reason,
            detail=detail[:500],
            receiver=self.name,
        )

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            self.handle(topic, payload)
        except Exception:
            # Not acknowledged: the site sends the batch again after its ack timeout.
            self._count("errors")
            log.exception("could not process a batch on %s; it will be resent", topic)

    def connect(self, opts: LinkOptions, group: str) -> MqttLink:
        """Start the MQTT link with the shared subscription."""
        self.link = MqttLink(
            opts,
            on_message=self._on_message,
            subscriptions=[(shared_batch_subscription(group, self.prefix), 1)],
        )
        self.link.start()
        return self.link


def _schema_version(frame: Frame) -> object:
    try:
        data = json.loads(frame.json_bytes())
    except (ValueError, WireError):
        return None
    return data.get("schema_version") if isinstance(data, dict) else None


@click.command("receiver")
@click.option("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
@click.option("--db", "db_url", required=True, help="postgresql://... or sqlite:///path")
@click.option("--sites", "sites_file", required=True, type=click.Path(path_type=Path),
              help="YAML registry: sites: {<site id>: {public_keys: [file.pub]}}")  # fmt: skip
@click.option("--group", default="kbe-receivers", show_default=True, help="Shared subscription group.")
@click.option("--prefix", default="kbe", show_default=True, help="Topic prefix.")
@click.option("--client-id", default=None, help="Defaults to kbe-rx-<group>-<hostname>; unique per receiver.")
@click.option("--ca-file", type=click.Path(path_type=Path), default=None, help="CA of the broker (mqtts://).")
@click.option("--cert-file", type=click.Path(path_type=Path), default=None, help="Client certificate (mutual TLS).")
@click.option("--key-file", type=click.Path(path_type=Path), default=None, help="Client key (mutual TLS).")
@click.option("--reconnect-max", default=10.0, show_default=True, help="Longest wait between reconnects (s).")
@click.option("--stats-every", default=60.0, show_default=True, help="Log the counters every this many seconds.")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def receiver_cmd(
    broker: str,
    db_url: str,
    sites_file: Path,
    group: str,
    prefix: str,
    client_id: str | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    reconnect_max: float,
    stats_every: float,
    log_level: str,
) -> None:
    """Receive, verify, persist and acknowledge the sites' batches until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = SiteRegistry.load(sites_file)
    db = open_db(db_url)
    name = client_id or f"kbe-rx-{group}-{socket.gethostname()}"
    receiver = Receiver(db, registry, prefix, name)
    opts = LinkOptions(
        broker=broker,
        client_id=name,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        reconnect_max_s=reconnect_max,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    link = receiver.connect(opts, group)
    log.info("receiver %s: %d sites registered, group %s, broker %s", name, len(registry), group, broker)
    try:
        while not stop.wait(stats_every):
            log.info("receiver %s counters: %s", name, dict(receiver.counters))
    finally:
        link.stop()
        db.close()
        log.info("receiver %s stopped: %s", name, dict(receiver.counters))

