"""The centre's enrolment service: checks the token, signs the CSR, registers the site's key, answers.

It subscribes to ``<prefix>/enrol/+/request`` (QoS 1). For each request it verifies the frame
against the public key inside it, checks the one-time token (unknown, used, expired or for another
site: refused and logged), signs the CSR with the site CA, adds the site's Ed25519 public key to
the receivers' registry file (which they reload without a restart), marks the token used and
answers on ``<prefix>/enrol/<site>/reply`` with a frame signed by the centre's key. A refusal is
answered too, so the technician sees why at the site.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kernel.errors import SignatureError
from provisioning.centre.ca import CentreFiles, centre_signer, sign_site_csr
from provisioning.centre.tokens import TokenBook
from sync.enrol import EnrolReply, EnrolRequest, EnrolTopics, open_request, pack_signed
from sync.mqtt import LinkOptions, MqttLink
from sync.pki import write_public
from sync.signing import public_pem
from sync.wire import WireError

log = logging.getLogger("kbe.enrol.centre")


def register_site_key(sites_file: Path, site_id: str, public_key_pem: bytes) -> Path:
    """Add a site's public key to the receivers' registry (``site-keys/<site>.pub``); idempotent.

    The registry is rewritten atomically (a receiver reads the old file or the new one); a site
    already registered keeps its other keys (rotation)."""
    keys_dir = sites_file.parent / "site-keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(public_key_pem).hexdigest()[:12]
    key_path = keys_dir / f"{site_id}-{digest}.pub"
    write_public(key_path, public_key_pem)
    with open(sites_file.with_name(sites_file.name + ".lock"), "a") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        data: Any = yaml.safe_load(sites_file.read_text(encoding="utf-8")) if sites_file.exists() else None
        if not isinstance(data, dict) or not isinstance(data.get("sites"), dict):
            data = {"sites": {}}
        entry = data["sites"].setdefault(site_id, {"public_keys": []})
        rel = str(key_path.relative_to(sites_file.parent))
        if rel not in entry["public_keys"]:
            entry["public_keys"].append(rel)
            write_public(sites_file, yaml.safe_dump(data, sort_keys=True).encode())
    return key_path


class EnrolService:
    """Answers enrolment requests; ``handle`` is the whole logic, ``connect`` puts it on a broker."""

    def __init__(self, files: CentreFiles, sites_file: Path, prefix: str = "kbe") -> None:
        self.files = files
        self.sites_file = sites_file
        self.prefix = prefix
        self.tokens = TokenBook(files.tokens)
        self.signer = centre_signer(files)
        self.counters: Counter[str] = Counter()
        self.link: MqttLink | None = None

    def handle(self, topic: str, payload: bytes) -> bytes | None:
        """Process one request; return the signed answer (None for what cannot be answered)."""
        parts = topic.split("/")
        if len(parts) != 4 or parts[1] != "enrol" or parts[3] != "request":
            return None
        try:
            req, site_key = open_request(payload)
        except (WireError, SignatureError) as exc:
            self.counters["malformed"] += 1
            log.warning("enrolment request on %s ignored: %s", topic, exc)
            return None
        if req.site_id != parts[2]:
            return self._refuse(req, f"request for {req.site_id!r} on the topic of {parts[2]!r}")
        try:
            csr = x509.load_pem_x509_csr(req.csr.encode())
        except ValueError as exc:
            return self._refuse(req, f"CSR is not PEM: {exc}")
        # Both keys name the requester: a repeated request must come with the same two.
        site_pem = public_pem(site_key)
        key_id = hashlib.sha256(
            csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            + site_pem
        ).hexdigest()
        verdict = self.tokens.check(req.token, req.site_id, key_id)
        if not verdict.ok:
            return self._refuse(req, verdict.reason)
        cert_pem = verdict.certificate
        if not cert_pem:
            try:
                cert = sign_site_csr(self.files, csr, req.site_id)
            except SignatureError as exc:
                return self._refuse(req, str(exc))
            verdict = self.tokens.use(req.token, req.site_id, key_id, cert.public_bytes(serialization.Encoding.PEM).decode())
            if not verdict.ok:  # another service took it in between
                return self._refuse(req, verdict.reason)
            cert_pem = verdict.certificate or cert.public_bytes(serialization.Encoding.PEM).decode()
            self.counters["enrolled"] += 1
            log.info("site %s enrolled (key registered in %s)", req.site_id, self.sites_file)
        else:
            self.counters["repeated"] += 1
            log.info("site %s asked again with its used token and the same keys: same certificate", req.site_id)
        # Registered before any "ok" leaves (idempotent): if this failed after the token was spent,
        # the site's next request, with the same keys, registers it.
        register_site_key(self.sites_file, req.site_id, site_pem)
        reply = EnrolReply(site_id=req.site_id, nonce=req.nonce, status="ok", certificate=cert_pem)
        return self._answer(reply)

    def _refuse(self, req: EnrolRequest, reason: str) -> bytes:
        self.counters["refused"] += 1
        log.warning("enrolment of site %s REFUSED: %s", req.site_id, reason)
        return self._answer(EnrolReply(site_id=req.site_id, nonce=req.nonce, status="refused", reason=reason[:500]))

    def _answer(self, reply: EnrolReply) -> bytes:
        frame = pack_signed(reply, self.signer)
        if self.link is not None:
            self.link.publish(EnrolTopics(self.prefix, reply.site_id).reply, frame, qos=1)
        return frame

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            self.handle(topic, payload)
        except Exception:
            self.counters["errors"] += 1
            log.exception("enrolment request on %s failed; the site asks again", topic)

    def connect(self, opts: LinkOptions) -> MqttLink:
        """Start the MQTT link subscribed to every site's enrolment requests."""
        self.link = MqttLink(opts, on_message=self._on_message,
                             subscriptions=[(EnrolTopics.request_filter(self.prefix), 1)])  # fmt: skip
        self.link.start()
        return self.link
