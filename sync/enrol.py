"""Enrolment: the site's first contact with the centre, and its switch to mutual TLS.

Until ``sync.tls.cert_file`` exists, the agent connects to the enrolment listener
(``sync.enrol.broker``: TLS, server certificate checked against ``tls.ca_file``, no client
certificate) and publishes an :class:`EnrolRequest` on ``<prefix>/enrol/<site>/request`` every
``retry_s`` seconds until the centre answers on ``<prefix>/enrol/<site>/reply``. The request is a
frame signed with the site's Ed25519 key and carries that public key, the TLS CSR and the one-time
token: the centre learns both keys and that the sender holds the signing key. The answer is a
frame signed by the centre (``sync.command_public_keys``); the agent accepts a certificate only
for its own TLS key, issued by ``tls.ca_file``, with its site id as CN. It writes the certificate,
removes the used token, and returns; the uplink then connects with mutual TLS. Acquisition runs
and buffers the whole time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kernel.errors import SignatureError, SyncError
from kernel.i18n import tr
from sync.config import SyncConfig
from sync.ed25519 import AnyPublicKey
from sync.mqtt import LinkOptions, MqttLink
from sync.pki import common_name, issued_by, same_public_key, write_public
from sync.signing import Signer, load_public_key, public_pem, verify_frame
from sync.wire_base import CODEC_JSON, SITE_PATTERN, WireError, pack_frame, unpack_frame

log = logging.getLogger("kbe.enrol")

ENROL_VERSION = 1
MAX_ENROL_BYTES = 64 * 1024
REFUSED_RETRY_S = 600.0  # after a refusal, unless a new token file appears


class EnrolTopics:
    """Topics of the enrolment exchange (the broker's ACL opens only these to un-enrolled clients)."""

    def __init__(self, prefix: str, site: str) -> None:
        self.prefix, self.site = prefix, site

    @property
    def request(self) -> str:
        """Site -> centre, QoS 1, frame signed by the site's key."""
        return f"{self.prefix}/enrol/{self.site}/request"

    @property
    def reply(self) -> str:
        """Centre -> site, QoS 1, frame signed by the centre's key."""
        return f"{self.prefix}/enrol/{self.site}/reply"

    @staticmethod
    def request_filter(prefix: str) -> str:
        """What the centre's enrolment service subscribes to."""
        return f"{prefix}/enrol/+/request"


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnrolRequest(_Msg):
    """What a site sends: its keys, its CSR and the one-time token."""

    v: Literal[1] = 1
    site_id: str = Field(pattern=SITE_PATTERN)
    nonce: str = Field(min_length=8, max_length=64)
    token: str = Field(min_length=8, max_length=200)
    public_key: str = Field(max_length=2000, description="The site's Ed25519 public key (PEM).")
    csr: str = Field(max_length=8000, description="The TLS CSR (PEM), CN = site id.")


class EnrolReply(_Msg):
    """What the centre answers: the certificate, or why not."""

    v: Literal[1] = 1
    site_id: str = Field(pattern=SITE_PATTERN)
    nonce: str = Field(max_length=64)
    status: Literal["ok", "refused"]
    reason: str = Field(default="", max_length=500)
    certificate: str = Field(default="", max_length=16000)


def pack_signed(doc: _Msg, signer: Signer) -> bytes:
    """A JSON frame signed with ``signer``."""
    payload = doc.model_dump_json().encode()
    return pack_frame(payload, signer.sign(payload), codec=CODEC_JSON, msg_id=getattr(doc, "nonce", ""))


def open_request(data: bytes) -> tuple[EnrolRequest, Ed25519PublicKey]:
    """Decode a request and check it is signed by the public key it carries (proof of possession)."""
    if len(data) > MAX_ENROL_BYTES:
        raise WireError(f"enrolment request of {len(data)} bytes")
    frame = unpack_frame(data)
    try:
        req = EnrolRequest.model_validate_json(frame.json_bytes())
    except ValidationError as exc:
        raise WireError(f"not an enrolment request: {exc.errors(include_url=False)[0]['msg']}") from None
    try:
        key = serialization.load_pem_public_key(req.public_key.encode())
    except ValueError as exc:
        raise WireError(f"public_key is not PEM: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise WireError("public_key is not an Ed25519 key")
    verify_frame(frame, [key])
    return req, key


def open_reply(data: bytes, centre_keys: Sequence[AnyPublicKey]) -> EnrolReply:
    """Decode a reply signed by the centre; raise :class:`SignatureError` or :class:`WireError` otherwise."""
    if len(data) > MAX_ENROL_BYTES:
        raise WireError(f"enrolment reply of {len(data)} bytes")
    frame = unpack_frame(data)
    verify_frame(frame, centre_keys)
    try:
        return EnrolReply.model_validate_json(frame.json_bytes())
    except ValidationError as exc:
        raise WireError(f"not an enrolment reply: {exc.errors(include_url=False)[0]['msg']}") from None


class EnrolRefused(SyncError):
    """The centre refused the enrolment (unknown, used or expired token, wrong site)."""


class Enroller:
    """The agent's side of enrolment; ``await run()`` returns once the certificate is installed."""

    def __init__(self, cfg: SyncConfig, site_id: str, signer: Signer) -> None:
        if cfg.enrol is None or cfg.tls is None or cfg.tls.cert_file is None or cfg.tls.key_file is None:
            raise SyncError("enrolment needs sync.enrol and sync.tls with cert_file and key_file")
        self.cfg = cfg
        self.enrol = cfg.enrol
        self.tls = cfg.tls
        self.cert_file: Path = cfg.tls.cert_file
        self.key_file: Path = cfg.tls.key_file
        self.site_id = site_id
        self.signer = signer
        self.topics = EnrolTopics(cfg.topic_prefix, site_id)
        self.state = "enrolled" if self.enrolled() else "waiting"
        self.last_refusal = ""
        self.requests_sent = 0
        self._answers: asyncio.Queue[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nonce = ""
        # Answers to our earlier requests count too (the centre may work through a backlog).
        self._nonces: collections.deque[str] = collections.deque(maxlen=64)

    def enrolled(self) -> bool:
        """Whether the client certificate is installed."""
        return self.cert_file.is_file()

    def health(self) -> dict[str, Any]:
        """Enrolment state for /health and the status page."""
        return {"state": self.state, "requests_sent": self.requests_sent, "last_refusal": self.last_refusal}

    def _request(self) -> bytes:
        token = self.enrol.token_file.read_text(encoding="utf-8").strip()
        self._nonce = os.urandom(12).hex()
        self._nonces.append(self._nonce)
        req = EnrolRequest(
            site_id=self.site_id,
            nonce=self._nonce,
            token=token,
            public_key=public_pem(self.signer.public_key()).decode(),
            csr=self.enrol.csr_file.read_text(encoding="ascii"),
        )
        return pack_signed(req, self.signer)

    def _token_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.enrol.token_file.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def _request_or_none(self) -> bytes | None:
        try:
            return self._request()
        except OSError as exc:
            if self.state != "no-token":
                log.error(tr("cannot enrol site %s: %s"), self.site_id, exc)
            self.state = "no-token"
            self.last_refusal = str(exc)
            return None

    def _on_message(self, topic: str, payload: bytes) -> None:
        loop, answers = self._loop, self._answers
        if loop is None or answers is None or len(payload) > MAX_ENROL_BYTES:
            return
        def put() -> None:
            if not answers.full():  # bounded: a flood of answers only drops answers
                answers.put_nowait(payload)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(put)

    async def run(self) -> None:
        """Ask until a valid certificate is installed; return then (and at once when already enrolled)."""
        if self.enrolled():
            self.state = "enrolled"
            return
        self._loop = asyncio.get_running_loop()
        self._answers = asyncio.Queue(maxsize=16)
        centre_keys = [load_public_key(p) for p in self.cfg.command_public_keys]
        opts = LinkOptions(
            broker=self.enrol.broker,
            client_id=f"kbe-enrol-{self.site_id}",
            ca_file=self.tls.ca_file,
            insecure_skip_verify=self.tls.insecure_skip_verify,
            keepalive_s=self.cfg.keepalive_s,
            reconnect_min_s=self.cfg.reconnect_min_s,
            reconnect_max_s=self.cfg.reconnect_max_s,
            session_expiry_s=0,
        )
        link = MqttLink(opts, on_message=self._on_message, subscriptions=[(self.topics.reply, 1)])
        link.start()
        self.state = "enrolling"
        log.info(tr("site %s is not enrolled: asking the centre on %s"), self.site_id, self.enrol.broker)
        try:
            next_ask = 0.0
            token_stamp = self._token_stamp()
            while True:
                now = time.monotonic()
                stamp = self._token_stamp()
                if stamp != token_stamp:  # a new token written by the technician: ask at once
                    token_stamp, next_ask = stamp, 0.0
                    self.state = "enrolling"
                if now >= next_ask and link.connected:
                    next_ask = now + self.enrol.retry_s
                    request = self._request_or_none()
                    if request is not None and link.publish(self.topics.request, request, qos=1).rc == 0:
                        self.requests_sent += 1
                try:
                    data = await asyncio.wait_for(self._answers.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    continue
                if self._accept(data, centre_keys):
                    return
                if self.state == "refused":
                    # The same token will be refused again: ask seldom until a new one is written.
                    next_ask = time.monotonic() + max(self.enrol.retry_s, REFUSED_RETRY_S)
        finally:
            await asyncio.to_thread(link.stop)

    def _accept(self, data: bytes, centre_keys: Sequence[AnyPublicKey]) -> bool:
        try:
            reply = open_reply(data, centre_keys)
        except (WireError, SignatureError) as exc:
            log.warning(tr("ignored an enrolment answer: %s"), exc)
            return False
        if reply.nonce not in self._nonces or reply.site_id != self.site_id:
            return False  # not an answer to a request of this run
        if reply.status != "ok":
            self.state = "refused"
            self.last_refusal = reply.reason
            log.error(tr("the centre refused the enrolment of %s: %s"), self.site_id, reply.reason)
            return False
        try:
            self._install(reply.certificate.encode())
        except SyncError as exc:
            self.state = "refused"
            self.last_refusal = str(exc)
            log.error("%s", exc)
            return False
        self.state = "enrolled"
        log.info(tr("site %s enrolled: certificate installed in %s; switching to mutual TLS"), self.site_id, self.cert_file)
        return True

    def _install(self, pem: bytes) -> None:
        try:
            cert = x509.load_pem_x509_certificate(pem)
            ca = x509.load_pem_x509_certificates(self.tls.ca_file.read_bytes())
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        except (ValueError, OSError) as exc:
            raise SyncError(f"enrolment answer: unusable certificate ({exc})") from None
        if not same_public_key(cert.public_key(), key.public_key()):
            raise SyncError(tr("enrolment answer: the certificate is not for this site's TLS key"))
        if common_name(cert.subject) != self.site_id:
            raise SyncError(tr("enrolment answer: the certificate names another site"))
        if not any(issued_by(cert, c) for c in ca):
            raise SyncError(tr("enrolment answer: the certificate is not issued by the centre's CA"))
        write_public(self.cert_file, pem)
        with contextlib.suppress(OSError):
            self.enrol.token_file.unlink()  # used once; useless from now on

