"""One MQTT connection (paho-mqtt 2.x, MQTT 5) kept up by a network thread with jittered backoff.

Used by the site's uploader and by the reference receiver. The thread runs paho's ``loop()`` (which
blocks in ``select`` on the socket, never spins) and reconnects after
``uniform(min, min(max, min * 2**attempt))`` seconds, the "full jitter" of AWS's backoff note
(https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). The session is
persistent (``clean_start=False`` plus a session expiry), so QoS 1 messages queued at the broker
while the link was down are delivered after it returns.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kernel.errors import ConfigError

log = logging.getLogger("kbe.mqtt")

SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class LinkOptions:
    """Everything needed to reach a broker."""

    broker: str
    client_id: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    session_expiry_s: int = SESSION_EXPIRY_S
    max_inflight: int = 20
    will_topic: str | None = None
    will_payload: bytes = b""
    will_factory: Callable[[], bytes] | None = None
    """When set, makes the will's payload afresh before each connection attempt (the site's signed
    offline status, stamped with its connect time); ``will_payload`` is used if it raises."""

    def host_port(self) -> tuple[str, int, bool]:
        """Host, port and whether TLS is used, from ``mqtt://`` or ``mqtts://``."""
        url = urlparse(self.broker)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ConfigError("broker", [f"broker: {self.broker!r} is not mqtt://host:port or mqtts://host:port"])
        tls = url.scheme == "mqtts"
        return url.hostname, url.port or (8883 if tls else 1883), tls


def is_plaintext(broker: str) -> bool:
    """Whether ``broker`` is a plaintext ``mqtt://`` address (no TLS)."""
    return broker.strip().lower().startswith("mqtt://")


def refuse_plaintext(broker: str, allow: bool, source: str, option: str = "--broker") -> None:
    """Raise :class:`ConfigError` (exit 2, one line naming ``option`` and its value) for an ``mqtt://``
    broker unless ``allow`` (``--allow-plaintext``): the centre's tools never go plaintext silently."""
    if is_plaintext(broker) and not allow:
        raise ConfigError(source, [f"{option}: {broker} is plaintext MQTT; use mqtts:// or pass "
                                   "--allow-plaintext (a lab only)"])  # fmt: skip


def warn_plaintext(broker: str, what: str, logger: logging.Logger | None = None) -> None:
    """Warn (at every start) that ``broker`` is plaintext MQTT and what crosses it unencrypted."""
    if is_plaintext(broker):
        (logger or log).warning("plaintext MQTT to %s (--allow-plaintext): %s", broker, what)


def backoff_delay(attempt: int, low: float, high: float) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (1-based): jittered, exponential, capped."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return random.uniform(low, max(low, ceiling))


OnConnect = Callable[[bool], None]
OnMessage = Callable[[str, bytes], None]
OnMessageAcked = Callable[[str, bytes, Callable[[], None]], None]
"""Gets the topic, the payload and ``done``: the broker's PUBACK goes out only when ``done()`` is called."""


class MqttLink:
    """A paho client in its own network thread; callbacks run in that thread."""

    def __init__(
        self,
        opts: LinkOptions,
        on_connect: OnConnect | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_message: OnMessage | None = None,
        subscriptions: list[tuple[str, int]] | None = None,
        on_message_acked: OnMessageAcked | None = None,
    ) -> None:
        self.opts = opts
        self.host, self.port, self.tls = opts.host_port()
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._on_message_cb = on_message
        self._on_message_acked_cb = on_message_acked
        self._subscriptions = list(subscriptions or [])
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self.connect_failures = 0
        self.connects = 0
        self.last_error = ""
        self.client = self._make_client()

    def _make_client(self) -> paho.Client:
        o = self.opts
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=o.client_id, protocol=paho.MQTTv5)
        c.max_inflight_messages_set(o.max_inflight)
        if self._on_message_acked_cb:
            c.manual_ack_set(True)
        if o.will_topic:
            c.will_set(o.will_topic, o.will_payload, qos=1, retain=True)
        if self.tls:
            c.tls_set(
                ca_certs=str(o.ca_file) if o.ca_file else None,
                certfile=str(o.cert_file) if o.cert_file else None,
                keyfile=str(o.key_file) if o.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            if o.insecure_skip_verify:
                c.tls_insecure_set(True)
        if o.username:
            c.username_pw_set(o.username, o.password)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_message = self._handle_message
        return c

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection (CONNACK success) and it is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or ``timeout``; for tools and tests."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Start the network thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=f"mqtt[{self.opts.client_id}]", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly and join the network thread."""
        self._stop.set()
        with contextlib.suppress(Exception):  # already gone is fine
            self.client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Queue a message; paho sends it from the network thread (thread-safe)."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    # -- network thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        attempt = 0
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.opts.session_expiry_s
        while not self._stop.is_set():
            accepted_before = self.connects
            self._refresh_will()
            try:
                self.client.connect(
                    self.host, self.port, self.opts.keepalive_s, clean_start=False, properties=props
                )
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                while not self._stop.is_set() and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    rc = self.client.loop(timeout=1.0)
                if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    self.last_error = paho.error_string(rc)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.debug("cannot reach %s:%s: %s", self.host, self.port, self.last_error)
            self._set_disconnected()
            if self._stop.is_set():
                break
            if self.connects > accepted_before:
                attempt = 1
            else:
                attempt += 1
                self.connect_failures += 1
            self._stop.wait(backoff_delay(attempt, self.opts.reconnect_min_s, self.opts.reconnect_max_s))
        with contextlib.suppress(Exception):  # best effort to flush the DISCONNECT
            self.client.loop(timeout=0.1)

    def _refresh_will(self) -> None:
        """Set the will made for this connection (paho sends it in the CONNECT that follows)."""
        o = self.opts
        if not o.will_topic or o.will_factory is None:
            return
        try:
            payload = o.will_factory()
        except Exception:  # a will must be set whatever happens: fall back to the one made at start
            log.warning("%s: could not make the will; the one made at start is used", o.client_id, exc_info=True)
            payload = o.will_payload
        self.client.will_set(o.will_topic, payload, qos=1, retain=True)

    def _set_disconnected(self) -> None:
        if self._connected.is_set():
            self._connected.clear()
            if self._on_disconnect_cb:
                self._on_disconnect_cb()

    def _handle_connect(
        self, client: paho.Client, userdata: object, flags: paho.ConnectFlags, rc: ReasonCode, props: object
    ) -> None:
        if rc.is_failure:
            self.last_error = f"broker refused the connection: {rc}"
            log.warning("%s: %s", self.opts.client_id, self.last_error)
            return
        self.connects += 1
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos=qos)
        self._connected.set()
        if self._on_connect_cb:
            self._on_connect_cb(bool(flags.session_present))

    def _handle_disconnect(
        self, client: paho.Client, userdata: object, flags: object, rc: ReasonCode, props: object
    ) -> None:
        self._set_disconnected()

    def _handle_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if self._on_message_acked_cb:
            mid, qos = msg.mid, msg.qos

            def done() -> None:
                client.ack(mid, qos)

            self._on_message_acked_cb(msg.topic, bytes(msg.payload), done)
        elif self._on_message_cb:
            self._on_message_cb(msg.topic, bytes(msg.payload))
