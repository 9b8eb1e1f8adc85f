"""The centre's site CA (X.509, ECDSA P-256) and its Ed25519 answer/command key, in one folder.

``ca_init`` writes ``ca.pem`` and ``ca.key`` (0600), ``centre.key`` (0600) and ``centre.pub``.
``sign_site_csr`` turns a site's CSR into a client certificate whose CN is the site id (the broker
uses it as the MQTT username); ``issue`` makes a key and certificate for a broker or a receiver.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kernel.errors import ConfigError, SignatureError
from sync.pki import common_name, new_tls_key, private_pem, write_public, write_secret
from sync.signing import Signer, generate_keypair

SITE_CERT_DAYS = 825
CA_DAYS = 3650


@dataclass(frozen=True)
class CentreFiles:
    """Paths of a centre folder."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The site CA certificate: sites and brokers trust it."""
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key (0600)."""
        return self.directory / "ca.key"

    @property
    def centre_key(self) -> Path:
        """The Ed25519 key that signs enrolment answers and commands (0600)."""
        return self.directory / "centre.key"

    @property
    def centre_pub(self) -> Path:
        """Its public half: every site gets a copy (``sync.command_public_keys``)."""
        return self.directory / "centre.pub"

    @property
    def tokens(self) -> Path:
        """The one-time token book."""
        return self.directory / "tokens.json"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kinhbac-edge")])


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=not ca,
                         encipher_only=False, decipher_only=False)  # fmt: skip


def ca_init(directory: Path, name: str = "kinhbac-edge site CA", days: int = CA_DAYS) -> CentreFiles:
    """Create the CA and the centre key; refuse to overwrite an existing CA."""
    files = CentreFiles(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if files.ca_key.exists() or files.ca_cert.exists():
        raise ConfigError(str(files.ca_key), ["a CA exists here already: refusing to overwrite it"])
    key = new_tls_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_secret(files.ca_key, private_pem(key))
    write_public(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    if not files.centre_key.exists():
        generate_keypair(directory, "centre")
    return files


def load_ca(files: CentreFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key; a missing or wrong file is a :class:`ConfigError`."""
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(files.directory), [f"no usable CA ({exc}): run edge-agent centre ca init --dir {files.directory}"]) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(str(files.ca_key), ["not an ECDSA key"])
    return cert, key


def centre_signer(files: CentreFiles) -> Signer:
    """The Ed25519 signer of the centre's answers."""
    try:
        return Signer.from_file(files.centre_key)
    except SignatureError as exc:
        raise ConfigError(str(files.centre_key), [str(exc)]) from None


def _builder(subject: x509.Name, public_key: object, ca: x509.Certificate, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
    )


def _weak_key(key: object) -> str:
    """Why a TLS key is too weak to certify, or empty: EC P-256 and up, RSA 2048 and up, Ed25519."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "" if key.curve.key_size >= 256 else f"EC curve {key.curve.name} is too small"
    if isinstance(key, rsa.RSAPublicKey):
        return "" if key.key_size >= 2048 else f"RSA {key.key_size} bits is too small (2048 at least)"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ""
    return f"{type(key).__name__} keys are not accepted"


def sign_site_csr(
    files: CentreFiles, csr: x509.CertificateSigningRequest, site_id: str, days: int = SITE_CERT_DAYS
) -> x509.Certificate:
    """A client certificate for a site's CSR; the CSR must be self-consistent and name the site."""
    if not csr.is_signature_valid:
        raise SignatureError("the CSR's signature does not verify")
    if common_name(csr.subject) != site_id:
        raise SignatureError(f"the CSR names {common_name(csr.subject)!r}, not site {site_id!r}")
    weak = _weak_key(csr.public_key())
    if weak:
        raise SignatureError(f"the CSR's key is refused: {weak}")
    ca, ca_key = load_ca(files)
    b = _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site_id)]), csr.public_key(), ca, days)
    b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(ca_key, hashes.SHA256())


def issue(files: CentreFiles, cn: str, out_dir: Path, hosts: tuple[str, ...] = (), days: int = SITE_CERT_DAYS) -> tuple[Path, Path]:
    """A key and certificate signed by the CA: a server one (for a broker) when ``hosts`` are given,
    a client one (for a receiver or the enrolment service) otherwise. Writes ``<cn>.pem``/``<cn>.key``."""
    ca, ca_key = load_ca(files)
    key = new_tls_key()
    b = _builder(_name(cn), key.public_key(), ca, days)
    if hosts:
        names: list[x509.GeneralName] = []
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{cn}.pem", out_dir / f"{cn}.key"
    write_secret(key_path, private_pem(key))
    write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
