"""The reference receiver: what the centre runs (or copies) to take batches from the sites.

For every message on ``$share/<group>/<prefix>/+/up/batch`` it checks, in this order: the frame
header, that the topic's site is registered, that the batch is signed, that the signature verifies
against one of the site's registered public keys, that the payload is a valid batch of the current
schema version for that same site. A batch that passes is persisted in ONE transaction with
``ON CONFLICT (site_id, seq) DO NOTHING`` and only then acknowledged (QoS 1) on
``<prefix>/<site>/down/ack`` with an :class:`~sync.wire.Ack` signed by the centre's key. A frame
the site signed but that cannot be stored is recorded in ``rejections`` and answered with a signed
:class:`~sync.wire.Rejection`; a frame the site's key did not sign is recorded and counted, never
answered.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import click

from kernel.config_base import check_secret_file
from kernel.errors import ConfigError, SignatureError
from kernel.ratelog import RateLimitedLog
from kernel.version import agent_version
from sync.mqtt import LinkOptions, MqttLink, refuse_plaintext, warn_plaintext
from sync.pki import check_private_key_file
from sync.receiver_db import ReceiverDB, UnstorableError, open_db
from sync.receiver_decode import BatchFields, decode_batch_fast
from sync.receiver_health import ReceiverHealth, health_http
from sync.receiver_queue import GroupWriter
from sync.signing import Signer, SiteRegistry, open_reply, open_status, verify_frame
from sync.wire import (
    SCHEMA_VERSION,
    Ack,
    AnsweredReason,
    CommandReply,
    Frame,
    Rejection,
    RejectReason,
    Status,
    Topics,
    WireError,
    content_hash,
    peek_batch_ids,
    shared_batch_subscription,
    site_of_topic,
    unpack_frame,
)

log = logging.getLogger("kbe.receiver")


class Receiver:
    """Verifies, persists and acknowledges batches; one instance per receiver process.

    Acks and rejections are signed with the centre's key (``signer``) and bound to the batch id and
    the SHA-256 of the batch payload. A frame the site's own key did not sign (unsigned, badly
    signed, unknown site, unreadable) cannot be attributed to the site: it is counted, recorded and
    logged, and never answered, so junk cannot make the centre speak in a site's name.
    """

    def __init__(
        self,
        db: ReceiverDB,
        registry: SiteRegistry,
        signer: Signer,
        prefix: str = "kbe",
        name: str = "receiver",
        health: ReceiverHealth | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.signer = signer
        self.prefix = prefix
        self.name = name
        self.health = health or ReceiverHealth()
        self.link: MqttLink | None = None
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._quiet = RateLimitedLog(log, 60.0)
        self._status_warned: set[str] = set()
        self._writer: GroupWriter[_Verified] | None = None

    def handle(self, topic: str, payload: bytes) -> Ack | Rejection | None:
        """Process one message from the batch topic there and then; publish and return the answer (None: not answered)."""
        checked = self._verify(topic, payload)
        return self._store([checked])[0] if isinstance(checked, _Verified) else checked

    def _on_batch(self, topic: str, payload: bytes, done: Callable[[], None]) -> None:
        """The MQTT thread: verify and decode here, store and acknowledge on the writer thread.

        The broker's PUBACK (``done``) waits for the commit, so a batch this receiver dies holding
        is delivered again by the broker; a refused frame is PUBACKed at once.
        """
        checked = self._verify(topic, payload)
        if isinstance(checked, _Verified) and self._writer is not None:
            self._writer.put(replace(checked, done=_once(done)))
        else:
            done()

    def _verify(self, topic: str, payload: bytes) -> _Verified | Rejection | None:
        """A batch ready to store, or the refusal already recorded (and published when answered)."""
        try:
            site = site_of_topic(topic)
        except WireError:
            self._count("malformed")
            return None
        started = time.monotonic()
        with self._lock:
            checked = self._check(site, topic, payload, started)
        if not isinstance(checked, _Verified):
            if checked is not None:
                self._publish(site, checked)
            self.health.batch_seconds.observe(time.monotonic() - started)
        return checked

    def _check(self, site: str, topic: str, payload: bytes, started: float) -> _Verified | Rejection | None:
        try:
            frame = unpack_frame(payload)
        except WireError as exc:
            self._drop(site, topic, payload, "malformed", str(exc))
            return None
        keys = self.registry.keys_for(site)
        if keys is None:
            self._drop(site, topic, payload, "unknown-site", f"site {site!r} is not registered")
            return None
        try:
            verify_frame(frame, keys)
        except SignatureError as exc:
            reason: RejectReason = "unsigned" if not frame.signature else "bad-signature"
            self._drop(site, topic, payload, reason, f"{exc} (claimed id {frame.msg_id[:80]!r})")
            return None
        # From here the site's own key signed the payload: the centre may answer in its name.
        digest = content_hash(frame.payload)
        try:
            batch = decode_batch_fast(frame)
        except WireError as exc:
            version = _schema_version(frame)
            answered: AnsweredReason = "schema-version" if version not in (None, SCHEMA_VERSION) else "malformed"
            return self._reject(site, topic, payload, frame, digest, answered, str(exc))
        if batch.site_id != site:
            detail = f"batch says site {batch.site_id!r}, topic says {site!r}"
            return self._reject(site, topic, payload, frame, digest, "site-mismatch", detail)
        return _Verified(site, batch, digest, started, topic, len(payload))

    def _store(self, group: list[_Verified]) -> list[Ack | Rejection]:
        """Store verified batches in one transaction, then acknowledge each (an ack only after the commit).

        When the database refuses a value, each batch of the group is tried alone, and the one it
        refuses is answered with an ``unstorable`` rejection (the site sets it aside) instead of
        staying unacknowledged and being resent forever. A lost connection still raises.
        """
        try:
            results = self.db.store_batches([v.batch for v in group], self.name)
        except UnstorableError as exc:
            if len(group) > 1:
                return [answer for v in group for answer in self._store([v])]
            return [self._unstorable(group[0], str(exc))]
        acks: list[Ack | Rejection] = []
        for v, (stored, dup) in zip(group, results, strict=True):
            batch = v.batch
            with self._lock:
                self._count("batches_stored")
                self._count("readings_stored", stored)
                self._count("readings_duplicate", dup)
            self.health.stored(v.site, batch, stored, dup)
            log.info(
                "%s batch %s: %d readings stored, %d duplicates (seq %d..%d)",
                v.site, batch.batch_id, stored, dup, batch.first_seq, batch.last_seq,
            )  # fmt: skip
            ack = Ack(
                site_id=v.site,
                batch_id=batch.batch_id,
                first_seq=batch.first_seq,
                last_seq=batch.last_seq,
                batch_sha256=v.digest,
                stored=stored,
                duplicates=dup,
                receiver=self.name,
            )
            self._publish(v.site, ack)
            v.done()
            self.health.batch_seconds.observe(time.monotonic() - v.started)
            acks.append(ack)
        return acks

    def _unstorable(self, v: _Verified, detail: str) -> Rejection:
        """A verified batch the database refused: recorded, counted and answered, signed and bound to it."""
        batch = v.batch
        detail = _printable(detail)
        with self._lock:
            self._count("rejected_unstorable")
        self.health.rejected(v.site, "unstorable")
        log.error("rejected batch %s from %s: unstorable: %s", batch.batch_id, v.site, detail)
        self.db.record_rejection(v.site, batch.batch_id, "unstorable", detail, v.topic, v.size, self.name)
        rejection = Rejection(
            site_id=v.site,
            batch_id=batch.batch_id,
            batch_sha256=v.digest,
            first_seq=batch.first_seq,
            last_seq=batch.last_seq,
            reason="unstorable",
            detail=detail,
            receiver=self.name,
        )
        self._publish(v.site, rejection)
        v.done()
        self.health.batch_seconds.observe(time.monotonic() - v.started)
        return rejection

    def _write_group(self, group: list[_Verified]) -> None:
        """The writer thread's work: a failed group is counted and logged, and no site gets an ack for it."""
        try:
            self._store(group)
        except Exception:
            with self._lock:
                self._count("errors")
            self.health.errors.inc()
            log.exception("could not store %d batch(es); the sites will resend them", len(group))
            for v in group:
                v.done()  # PUBACK all the same: a batch that cannot be stored must not hold a broker slot

    def _publish(self, site: str, answer: Ack | Rejection) -> None:
        if self.link is not None:
            self.link.publish(Topics(self.prefix, site).ack, self.signer.small_frame(answer, answer.batch_id), qos=1)

    def _drop(self, site: str, topic: str, payload: bytes, reason: RejectReason, detail: str) -> None:
        """A frame that cannot be attributed to the site: counted, recorded, logged (rate-limited), not answered."""
        self._count(f"rejected_{reason}")
        self.health.rejected(site, reason)
        self._quiet.warning(
            (site, reason), "dropped an unattributable frame on %s (%d bytes): %s: %s", topic, len(payload), reason,
            detail,
        )  # fmt: skip
        self.db.record_rejection(site, None, reason, _printable(detail), topic, len(payload), self.name)

    def _reject(
        self,
        site: str,
        topic: str,
        payload: bytes,
        frame: Frame,
        digest: str,
        reason: AnsweredReason,
        detail: str,
    ) -> Rejection | None:
        """A batch the site signed but the centre cannot take: recorded and answered, signed and bound to it."""
        bid, first, last = peek_batch_ids(frame)
        detail = _printable(detail)
        self._count(f"rejected_{reason}")
        self.health.rejected(site, reason)
        log.warning("rejected batch %s from %s: %s: %s", bid, site, reason, detail)
        self.db.record_rejection(site, bid, reason, detail, topic, len(payload), self.name)
        if bid is None:
            return None  # nothing the site could match it to
        return Rejection(
            site_id=site,
            batch_id=bid,
            batch_sha256=digest,
            first_seq=first,
            last_seq=last,
            reason=reason,
            detail=detail,
            receiver=self.name,
        )

    def poll_registry(self) -> None:
        """Let the site registry pick up a changed file (or a SIGHUP) while no batch arrives."""
        with self._lock:
            self.registry.poll()

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def handle_status(self, topic: str, payload: bytes) -> Status | None:
        """Keep the latest status of a registered site, once its frame verifies against the site's keys.

        An unsigned (plain JSON: an agent older than status version 3, or anyone), badly signed or
        invalid status, or one for an unknown site, is not from the site: it is counted
        (``kbe_receiver_status_untrusted_total{site,reason}``), logged once per site, and neither
        stored nor taken as a sign of life."""
        try:
            site = site_of_topic(topic)
        except WireError:
            return None
        keys = self.registry.keys_for(site)
        if keys is None:
            self._untrusted_status(site, topic, "unknown-site", f"site {site!r} is not registered")
            return None
        try:
            status = open_status(payload, keys, site)
        except SignatureError as exc:
            unsigned = payload[:1] == b"{" or "unsigned" in str(exc)
            self._untrusted_status(site, topic, "unsigned" if unsigned else "bad-signature", str(exc))
            return None
        except WireError as exc:
            self._untrusted_status(site, topic, "invalid", str(exc))
            return None
        with self._lock:
            self.db.record_status(status, self.name)
        self.health.reported(site)
        self._count("status_stored")
        return status

    def _untrusted_status(self, site: str, topic: str, reason: str, detail: str) -> None:
        """A status the site's key did not sign (or not a status): counted, logged once per site, not kept."""
        self._count(f"status_{reason.replace('-', '_')}")
        self.health.status_untrusted(site, reason)
        with self._lock:
            first = site not in self._status_warned
            if len(self._status_warned) >= 1000:  # bounded: topics of unknown sites are anyone's to invent
                self._status_warned.clear()
            self._status_warned.add(site)
        if first:
            log.warning("ignored a status on %s that is not from site %s: %s: %s (logged once per site; counted in "
                        "kbe_receiver_status_untrusted_total)", topic, site, reason, _printable(detail)[:200])  # fmt: skip

    def handle_reply(self, topic: str, payload: bytes) -> CommandReply | None:
        """Keep a command reply for the centre tools (issue 11), once verified against the site's keys."""
        try:
            site = site_of_topic(topic)
        except WireError:
            return None
        keys = self.registry.keys_for(site)
        if keys is None:
            self._count("reply_unknown_site")
            return None
        try:
            reply = open_reply(payload, keys)
        except (SignatureError, WireError) as exc:
            self._count("reply_refused")
            self._quiet.warning((site, "reply"), "ignored a command reply on %s: %s", topic, exc)
            return None
        if reply.site_id != site:
            self._count("reply_refused")
            return None
        with self._lock:
            self.db.record_reply(reply)
        self._count("replies")
        return reply

    def _on_message(self, topic: str, payload: bytes, done: Callable[[], None]) -> None:
        if topic.endswith(("/status", "/cmd-reply")):
            try:
                if topic.endswith("/status"):
                    self.handle_status(topic, payload)
                else:
                    self.handle_reply(topic, payload)
            except Exception:
                self._count("errors")
                log.exception("could not keep a message on %s", topic)
            done()
            return
        try:
            if self._writer is not None:
                self._on_batch(topic, payload, done)
                return
            self.handle(topic, payload)
        except Exception:
            # Not acknowledged: the site sends the batch again after its ack timeout.
            self._count("errors")
            self.health.errors.inc()
            log.exception("could not process a batch on %s; it will be resent", topic)
        done()

    def connect(self, opts: LinkOptions, group: str) -> MqttLink:
        """Start the writer thread, then the MQTT link with the shared subscription."""
        self._writer = GroupWriter(self._write_group)
        self._writer.start()
        self.link = MqttLink(
            opts,
            on_message_acked=self._on_message,
            on_connect=lambda _session: self.health.broker_up(True),
            on_disconnect=lambda: self.health.broker_up(False),
            # Status and replies are not shared: every receiver keeps them (idempotent upserts), and a
            # shared subscription would not get the retained statuses.
            subscriptions=[
                (shared_batch_subscription(group, self.prefix), 1),
                (Topics(self.prefix, "+").status, 1),
                (Topics(self.prefix, "+").cmd_reply, 1),
            ],
        )
        self.link.start()
        return self.link

    def disconnect(self) -> None:
        """Stop the MQTT link, then the writer; batches still queued were not PUBACKed, so the broker redelivers them."""
        if self.link is not None:
            self.link.stop()
        if self._writer is not None:
            self._writer.stop()


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class _Verified:
    """A batch the site signed and the schema accepts, waiting to be stored."""

    site: str
    batch: BatchFields
    digest: str
    started: float
    topic: str = ""
    size: int = 0
    done: Callable[[], None] = _nothing  # the broker's PUBACK, sent once the batch is committed


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` that runs at most once: a group that fails after some of its batches were answered
    PUBACKs the rest without PUBACKing the answered ones twice (their packet ids may be reused)."""
    called = threading.Event()

    def run() -> None:
        if not called.is_set():
            called.set()
            fn()

    return run


def _printable(detail: str) -> str:
    """A refusal's detail as the database can hold it: NULs and lone surrogates escaped, 500 characters."""
    text = detail.replace("\x00", "\\x00")[:500]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _schema_version(frame: Frame) -> object:
    try:
        data = json.loads(frame.json_bytes())
    except (ValueError, WireError):
        return None
    return data.get("schema_version") if isinstance(data, dict) else None


def _check_key_files(signing_key: Path, key_file: Path | None) -> None:
    problems = []
    for option, path in (("--signing-key", signing_key), ("--key-file", key_file)):
        if path is None:
            continue
        try:
            check_secret_file(path)
        except ValueError as exc:
            problems.append(f"{option}: {exc}")
            continue
        try:
            check_private_key_file(path)
        except ValueError as exc:
            problems.append(f"{option}: {exc}")
    if problems:
        raise ConfigError("receiver", problems)


@click.command("receiver")
@click.option("--broker", required=True, help="mqtts://host:port (mqtt:// only with --allow-plaintext)")
@click.option("--allow-plaintext", is_flag=True, help="Accept an mqtt:// broker (a lab; warned at every start).")
@click.option("--db", "db_url", required=True, help="postgresql://... or sqlite:///path")
@click.option("--sites", "sites_file", required=True, type=click.Path(path_type=Path),
              help="YAML registry: sites: {<site id>: {public_keys: [file.pub]}}")  # fmt: skip
@click.option("--signing-key", required=True, type=click.Path(path_type=Path),
              help="The centre's Ed25519 private key (PEM, mode 0600): signs every ack and rejection.")  # fmt: skip
@click.option("--group", default="kbe-receivers", show_default=True, help="Shared subscription group.")
@click.option("--prefix", default="kbe", show_default=True, help="Topic prefix.")
@click.option("--client-id", default=None, help="Defaults to kbe-rx-<group>-<hostname>; unique per receiver.")
@click.option("--ca-file", type=click.Path(path_type=Path), default=None, help="CA of the broker (mqtts://).")
@click.option("--cert-file", type=click.Path(path_type=Path), default=None, help="Client certificate (mutual TLS).")
@click.option("--key-file", type=click.Path(path_type=Path), default=None, help="Client key (mutual TLS), mode 0600.")
@click.option("--reconnect-max", default=10.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Longest wait between reconnects (s).")  # fmt: skip
@click.option("--health-listen", default=None, help="host:port of /health and /metrics (none by default).")
@click.option("--silence", "silence_s", default=900.0, show_default=True, type=click.FloatRange(1, 7 * 86400),
              help="/health turns red when no site has reported for this many seconds.")  # fmt: skip
@click.option("--reject-window", "reject_window_s", default=300.0, show_default=True,
              type=click.FloatRange(1, 86400),
              help="/health is red while a site had frames refused this recently and none stored since.")  # fmt: skip
@click.option("--stats-every", default=60.0, show_default=True, type=click.FloatRange(1, 86400),
              help="Log the counters every this many seconds.")  # fmt: skip
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def receiver_cmd(
    broker: str,
    allow_plaintext: bool,
    db_url: str,
    sites_file: Path,
    signing_key: Path,
    group: str,
    prefix: str,
    client_id: str | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    reconnect_max: float,
    health_listen: str | None,
    silence_s: float,
    reject_window_s: float,
    stats_every: float,
    log_level: str,
) -> None:
    """Receive, verify, persist and acknowledge the sites' batches until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    refuse_plaintext(broker, allow_plaintext, "receiver")
    _check_key_files(signing_key, key_file)
    signer = Signer.from_file(signing_key)
    registry = SiteRegistry.load(sites_file)
    db = open_db(db_url)
    warn_plaintext(broker, "anyone on the path can read and drop batches", log)
    name = client_id or f"kbe-rx-{group}-{socket.gethostname()}"
    health = ReceiverHealth(silence_s, reject_window_s, version=agent_version())
    http = health_http(health_listen, health) if health_listen else None
    receiver = Receiver(db, registry, signer, prefix, name, health)
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
    # A new site in the registry file is picked up within a second anyway; SIGHUP forces it.
    signal.signal(signal.SIGHUP, lambda *_: registry.request_reload())
    if http is not None:
        http.start()
        log.info("receiver health on http://%s/health and /metrics", health_listen)
    receiver.connect(opts, group)
    log.info("receiver %s: %d sites registered, group %s, broker %s", name, len(registry), group, broker)
    next_stats = time.monotonic() + stats_every
    try:
        while not stop.wait(1.0):
            # Also reloads the registry while no batch arrives (a SIGHUP or an edit shows in the log).
            receiver.poll_registry()
            if time.monotonic() >= next_stats:
                next_stats += stats_every
                report = health.report()
                if not report["ok"]:
                    log.warning("receiver %s is blind: %s (see /health)", name, ", ".join(report["reasons"]))
                log.info("receiver %s counters: %s", name, dict(receiver.counters))
    finally:
        receiver.disconnect()
        if http is not None:
            http.stop()
        db.close()
        log.info("receiver %s stopped: %s", name, dict(receiver.counters))
