"""Certificates and key files of a site: checks that name the file and why, CSRs, fingerprints.

What ``config check`` uses to catch the files that fail on site (a garbage certificate, a public key
given as the signing key), and what ``provision init`` and enrolment use to write keys and CSRs.
Everything is ``cryptography`` (X.509, ECDSA P-256 for TLS, Ed25519 for signatures), imported by
the function that needs it: a site without certificates never loads it (Ed25519 keys in their usual
PEM forms are checked by :mod:`sync.ed25519`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from kernel.config_files import check_secret_file
from kernel.i18n import N_, tr
from sync import ed25519

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_PRIVATE_MARKERS = (b"PRIVATE KEY-----",)
_PUBLIC_MARKERS = (b"-----BEGIN PUBLIC KEY-----", b"-----BEGIN RSA PUBLIC KEY-----")
_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_CSR_MARKER = b"-----BEGIN CERTIFICATE REQUEST-----"
_MAX_PEM = 1024 * 1024


def _read(path: Path) -> bytes:
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(tr("file {file!r} cannot be read: {why}").format(file=str(path), why=exc.strerror)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(tr("file {file!r} is not a regular file").format(file=str(path)))
    if st.st_size > _MAX_PEM:
        raise ValueError(tr("file {file!r} is {size} bytes, too big for a PEM file").format(file=str(path), size=st.st_size))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(tr("file {file!r} cannot be read: {why}").format(file=str(path), why=exc.strerror)) from None


def pem_kind(data: bytes) -> str:
    """What a PEM blob holds: ``certificate``, ``csr``, ``private-key``, ``public-key``, ``empty`` or ``garbage``."""
    if not data.strip():
        return "empty"
    if _CERT_MARKER in data:
        return "certificate"
    if _CSR_MARKER in data:
        return "csr"
    if any(m in data for m in _PRIVATE_MARKERS):
        return "private-key"
    if any(m in data for m in _PUBLIC_MARKERS):
        return "public-key"
    return "garbage"


_KIND_TEXT = {
    "empty": N_("it is empty"),
    "csr": N_("it holds a certificate request (CSR), not a certificate: enrol the site first"),
    "private-key": N_("it holds a private key, not a certificate"),
    "public-key": N_("it holds a public key, not a certificate"),
    "garbage": N_("it is not PEM text (no -----BEGIN CERTIFICATE----- block)"),
}
_KEY_GARBAGE = N_("it is not PEM text (no -----BEGIN PRIVATE KEY----- block)")


def check_cert_file(path: Path, now: dt.datetime | None = None) -> x509.Certificate:
    """The first certificate of a PEM file; ``ValueError`` naming the file and why it is unusable."""
    data = _read(path)
    kind = pem_kind(data)
    if kind != "certificate":
        raise ValueError(
            tr("file {file!r} is not a certificate: {why}").format(file=str(path), why=tr(_KIND_TEXT[kind]))
        )
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except ValueError as exc:
        raise ValueError(
            tr("file {file!r} is not a certificate: {why}").format(file=str(path), why=f"damaged PEM ({exc})")
        ) from None
    now = now or dt.datetime.now(dt.timezone.utc)
    if cert.not_valid_after_utc < now:
        raise ValueError(
            tr("certificate {file!r} expired on {date}").format(file=str(path), date=cert.not_valid_after_utc.date())
        )
    return cert


def check_tls_key_file(path: Path) -> None:
    """A TLS private key in PEM; ``ValueError`` naming the file and why otherwise."""
    data = _read(path)
    kind = pem_kind(data)
    if kind != "private-key":
        why = tr("it holds a {kind}, not a private key").format(kind=kind.replace("-", " "))
        raise ValueError(tr("file {file!r} is not a TLS private key: {why}").format(file=str(path), why=why))
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            tr("file {file!r} is not a TLS private key: {why}").format(file=str(path), why=f"unreadable PEM ({exc})")
        ) from None


def check_signing_key_file(path: Path) -> None:
    """The site's Ed25519 signing key: a public key given here is named as such, before the mode check."""
    data = _read(path)
    kind = pem_kind(data)
    if kind == "public-key":
        raise ValueError(
            tr("file {file!r} is a public key, but the signing key must be the site's private key (site.key)").format(
                file=str(path)
            )
        )
    check_secret_file(path)
    if kind != "private-key":
        why = tr(_KEY_GARBAGE) if kind == "garbage" else tr("it holds a {kind}, not a private key").format(kind=kind)
        raise ValueError(tr("file {file!r} is not an Ed25519 private key: {why}").format(file=str(path), why=why))
    if ed25519.private_from_pem(data) is not None:
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            tr("file {file!r} is not an Ed25519 private key: {why}").format(file=str(path), why=f"unreadable PEM ({exc})")
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        why = tr("it is a {alg} key").format(alg=type(key).__name__.removeprefix("_").replace("PrivateKey", ""))
        raise ValueError(tr("file {file!r} is not an Ed25519 private key: {why}").format(file=str(path), why=why))


def check_private_key_file(path: Path) -> None:
    """Any unencrypted PEM private key (the receiver's signing and TLS keys); ``ValueError`` naming the file."""
    data = _read(path)
    kind = pem_kind(data)
    if kind != "private-key":
        what = kind.replace("-", " ") if kind in ("public-key", "certificate", "csr") else "no PEM key"
        raise ValueError(f"file {str(path)!r} holds a {what}; expected an unencrypted PEM private key")
    if ed25519.private_from_pem(data) is not None:
        return
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"file {str(path)!r} is not an unencrypted PEM private key ({_first_line(exc)})") from None


def check_public_key_file(path: Path) -> None:
    """An Ed25519 public key in PEM (the centre's keys a site trusts); ``ValueError`` naming the file and why."""
    data = _read(path)
    if pem_kind(data) == "private-key":
        raise ValueError(
            f"file {str(path)!r} holds a private key; give the public key (.pub) here and keep the private one secret"
        )
    if ed25519.public_from_pem(data) is not None:
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"file {str(path)!r} is not a PEM public key ({_first_line(exc)})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"file {str(path)!r} is not an Ed25519 public key")


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:120] if lines else type(exc).__name__


def fingerprint(key: ed25519.AnyPublicKey) -> str:
    """A short, readable fingerprint of a public key: SHA-256 of the raw key, base32, 4 groups of 4."""
    raw = key.public_bytes_raw()
    b32 = base64.b32encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return "-".join(b32[i : i + 4] for i in range(0, 16, 4))


def write_secret(path: Path, data: bytes) -> None:
    """Write a private file, mode 0600 from its first byte, replacing any previous file atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (mode 0644) atomically: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.chmod(0o644)
    os.replace(tmp, path)


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    """A TLS key (ECDSA P-256: small, fast on a Pi, accepted by Mosquitto and every TLS stack)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the file's mode protects it)."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_csr(key: ec.EllipticCurvePrivateKey, site_id: str) -> x509.CertificateSigningRequest:
    """A CSR whose subject CN is the site id (the broker maps it to the MQTT username)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, site_id), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kinhbac-edge")]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def common_name(name: x509.Name) -> str | None:
    """The CN of a subject, or None."""
    from cryptography.x509.oid import NameOID

    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None


def same_public_key(a: object, b: object) -> bool:
    """Whether two ``cryptography`` public keys are the same key."""
    from cryptography.hazmat.primitives import serialization

    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        return bool(a.public_bytes(*fmt) == b.public_bytes(*fmt))  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert`` (issuer name and signature)."""
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def cert_matches_key(cert_file: Path, key_file: Path) -> bool:
    """Whether the certificate in ``cert_file`` carries the public half of the key in ``key_file``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificates(_read(cert_file))[0]
        key = serialization.load_pem_private_key(_read(key_file), password=None)
    except (ValueError, TypeError):
        return True  # unreadable files are reported by their own checks
    return same_public_key(cert.public_key(), key.public_key())
