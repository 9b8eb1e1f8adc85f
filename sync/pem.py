"""Open the certificates and keys a config names and say, per file, what is wrong with it.

Each check returns None when the file is fine, else one line naming the file and the problem, so
``config check`` can report a garbage CA file or a public key given as a signing key before the
agent starts (instead of ``SSLError: PEM lib`` at connect time).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kernel.config_base import read_limited

PEM_LIMIT = 1024 * 1024  # a CA bundle is tens of kilobytes


def _read(path: Path) -> tuple[bytes | None, str | None]:
    try:
        return read_limited(path, PEM_LIMIT), None
    except ValueError as exc:
        return None, str(exc)


def certificate_problem(path: Path) -> str | None:
    """None when ``path`` holds at least one PEM X.509 certificate."""
    data, problem = _read(path)
    if data is None:
        return problem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        what = "a private key" if b"PRIVATE KEY" in data else "no PEM certificate"
        return f"{str(path)!r} holds {what}; expected a PEM certificate (-----BEGIN CERTIFICATE-----)"
    from cryptography import x509  # only a site with TLS certificates pays for it (about 2 MB)

    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        return f"{str(path)!r} is not a valid PEM certificate ({_line(exc)})"
    return None


def private_key_problem(path: Path, cert: Path | None = None) -> str | None:
    """None when ``path`` holds an unencrypted PEM private key (matching ``cert`` when given)."""
    data, problem = _read(path)
    if data is None:
        return problem
    if b"PRIVATE KEY" not in data:
        what = "a public key" if b"PUBLIC KEY" in data else "a certificate" if b"CERTIFICATE" in data else "no PEM key"
        return f"{str(path)!r} holds {what}; expected an unencrypted PEM private key"
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        return f"{str(path)!r} is not an unencrypted PEM private key ({_line(exc)})"
    if cert is not None and certificate_problem(cert) is None:
        from cryptography import x509

        leaf = x509.load_pem_x509_certificates(read_limited(cert, PEM_LIMIT))[0]
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            return f"{str(path)!r} is not the key of the certificate {str(cert)!r}"
    return None


def public_key_problem(path: Path) -> str | None:
    """None when ``path`` holds an Ed25519 public key (PEM)."""
    data, problem = _read(path)
    if data is None:
        return problem
    if b"PRIVATE KEY" in data:
        return f"{str(path)!r} holds a private key; give the public key (.pub) here and keep the private one secret"
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        return f"{str(path)!r} is not a PEM public key ({_line(exc)})"
    if not isinstance(key, Ed25519PublicKey):
        return f"{str(path)!r} is not an Ed25519 public key"
    return None


def _line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:120] if lines else type(exc).__name__
