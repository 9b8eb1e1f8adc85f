"""``edge-agent provision init``: the site's identity, written once on site by the technician.

Writes, under ``--dir``: ``keys/site.key`` (Ed25519 signing key) and ``keys/site.pub``,
``keys/site-tls.key`` (ECDSA P-256) and ``keys/site.csr`` (CN = site id), the centre's files when
given (``keys/ca.pem``, ``keys/centre.pub``, ``keys/enrol.token``), a site config skeleton
``site.yaml`` that ``config check`` accepts as it is, and ``workorder-qr.png``. Private files are
mode 0600 and, when run as root, owned by the service user (``kbe``, ``--user``). Prints the QR code on the terminal
and the short text code (site id + public-key fingerprint) for the work order.
"""

from __future__ import annotations

import base64
import io
import os
import pwd
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import segno
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kernel.errors import ConfigError
from kernel.i18n import N_, gettext_for
from sync.pki import fingerprint, make_csr, new_tls_key, private_pem, write_public, write_secret
from sync.signing import public_pem
from sync.wire_base import SITE_RE

SERVICE_USER = "kbe"  # the user of provisioning/systemd/edge-agent.service (sysusers: kinhbac-edge.conf)
DEFAULT_DIR = Path("/etc/kinhbac-edge")


@dataclass(frozen=True)
class Identity:
    """What ``provision init`` wrote."""

    site_id: str
    directory: Path
    config: Path
    signing_key: Path
    public_key: Path
    tls_key: Path
    csr: Path
    qr_png: Path
    code: str
    qr_text: str


def work_order_code(site_id: str, key: Ed25519PublicKey) -> str:
    """The short text code for the work order: site id and public-key fingerprint."""
    return f"{site_id} {fingerprint(key)}"


def qr_payload(site_id: str, key: Ed25519PublicKey) -> str:
    """What the QR code carries: the site id, the full public key (base64url) and its fingerprint."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    b64 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"KBE1;site={site_id};key={b64};fp={fingerprint(key)}"


def _chown_to_service_user(paths: list[Path], user: str | None = None) -> bool:
    """When root and the service user exists, give it the files; True when done."""
    if os.geteuid() != 0:
        return False
    try:
        pw = pwd.getpwnam(user or SERVICE_USER)
    except KeyError:
        return False
    for p in paths:
        os.chown(p, pw.pw_uid, pw.pw_gid)
    return True


def skeleton(
    site_id: str,
    name: str | None,
    lat: float | None,
    lon: float | None,
    broker: str,
    enrol_broker: str,
    store: str,
) -> dict[str, object]:
    """The site config ``provision init`` writes (paths relative to the config file)."""
    site: dict[str, object] = {"id": site_id, "name": name or site_id}
    if lat is not None and lon is not None:
        site["location"] = {"lat": lat, "lon": lon}
    return {
        "site": site,
        "devices": [],
        "sync": {
            "broker": broker,
            "tls": {"ca_file": "keys/ca.pem", "cert_file": "keys/site.crt", "key_file": "keys/site-tls.key"},
            "signing_key_file": "keys/site.key",
            "centre_public_keys": ["keys/centre.pub"],
            "command_public_keys": ["keys/centre.pub"],
            "enrol": {"broker": enrol_broker, "token_file": "keys/enrol.token", "csr_file": "keys/site.csr"},
        },
        "store": {"path": store},
    }


def provision_init(
    site_id: str,
    directory: Path,
    *,
    name: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    broker: str = "mqtts://ioc.bacninh.example:8883",
    enrol_broker: str = "mqtts://ioc.bacninh.example:8884",
    ca_file: Path | None = None,
    centre_key: Path | None = None,
    token: str | None = None,
    store: str = "/var/lib/kinhbac-edge/store.db",
    user: str | None = None,
) -> Identity:
    """Write the site's keys, CSR, config skeleton and QR code; refuse to overwrite existing keys."""

    if not SITE_RE.match(site_id):
        raise ConfigError("--site", [f"{site_id!r} is not a valid site id (a-z, 0-9, . _ -; 63 at most)"])
    if lat is None or lon is None:
        raise ConfigError("--lat/--lon", ["the site config needs the site's location"])
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    keys.chmod(0o700)
    signing_key, public_key = keys / "site.key", keys / "site.pub"
    tls_key, csr_path, config = keys / "site-tls.key", keys / "site.csr", directory / "site.yaml"
    existing = [p for p in (signing_key, tls_key, config) if p.exists()]
    if existing:
        raise ConfigError(str(existing[0]), ["exists already: refusing to overwrite a site's identity"])
    problems = [f"{opt}: file {str(p)!r} does not exist" for opt, p in (("--ca", ca_file), ("--centre-key", centre_key))
                if p is not None and not p.is_file()]  # fmt: skip
    if problems:
        raise ConfigError("provision init", problems)

    sk = Ed25519PrivateKey.generate()
    write_secret(signing_key, private_pem(sk))
    write_public(public_key, public_pem(sk.public_key()))
    tk = new_tls_key()
    write_secret(tls_key, private_pem(tk))
    write_public(csr_path, make_csr(tk, site_id).public_bytes(serialization.Encoding.PEM))
    written = [keys, signing_key, public_key, tls_key, csr_path]
    if ca_file is not None:
        shutil.copyfile(ca_file, keys / "ca.pem")
        written.append(keys / "ca.pem")
    if centre_key is not None:
        shutil.copyfile(centre_key, keys / "centre.pub")
        written.append(keys / "centre.pub")
    if token:
        write_secret(keys / "enrol.token", token.strip().encode() + b"\n")
        written.append(keys / "enrol.token")
    doc = skeleton(site_id, name, lat, lon, broker, enrol_broker, store)
    text = "# Written by edge-agent provision init; add the site's devices (edge-agent provision scan).\n"
    write_public(config, (text + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)).encode())
    written.append(config)

    qr_text = qr_payload(site_id, sk.public_key())
    qr = segno.make(qr_text, error="m")
    qr_png = directory / "workorder-qr.png"
    qr.save(str(qr_png), scale=6, border=4)
    written.append(qr_png)
    _chown_to_service_user([*written, directory], user)
    return Identity(site_id, directory, config, signing_key, public_key, tls_key, csr_path, qr_png,
                    work_order_code(site_id, sk.public_key()), qr_text)  # fmt: skip


def terminal_qr(text: str) -> str:
    """The QR code drawn with block characters, for the technician's terminal."""
    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue()


_MSG_WROTE = N_("Site {site}: identity written in {dir}")
_MSG_KEYS = N_("signing key {key} (mode 0600, never leaves the device); public key {pub}")
_MSG_TLS = N_("TLS key {key} (mode 0600) and certificate request {csr}")
_MSG_CONFIG = N_("site config {config}: add the devices, then: edge-agent config check {config}")
_MSG_CODE = N_("Work order code (site and key fingerprint): {code}")
_MSG_QR = N_("QR code for the work order: {png}")
_MSG_MISSING = N_("Still needed from the centre: {files} (copy them into {dir})")
_MSG_ENROL = N_("The agent enrols by itself at its first connection with the one-time token.")


@click.command("init")
@click.option("--site", "site_id", required=True, help="Site id, e.g. bn-kcn-que-vo-01.")
@click.option("--name", default=None, help="Human name of the site.")
@click.option("--lat", type=float, required=True, help="Latitude (the site config needs the location).")
@click.option("--lon", type=float, required=True, help="Longitude.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR,
              show_default=True, help="Where site.yaml and keys/ go.")  # fmt: skip
@click.option("--broker", default="mqtts://ioc.bacninh.example:8883", show_default=True, help="mTLS listener.")
@click.option("--enrol-broker", default="mqtts://ioc.bacninh.example:8884", show_default=True,
              help="Enrolment listener (TLS, no client certificate).")  # fmt: skip
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The centre's CA certificate (ca.pem).")  # fmt: skip
@click.option("--centre-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The centre's public key (centre.pub) that signs its answers and commands.")  # fmt: skip
@click.option("--token", default=None,
              help="One-time enrolment token from the work order; '-' reads it from standard input (keeps it out of the shell history).")  # fmt: skip
@click.option("--store", default="/var/lib/kinhbac-edge/store.db", show_default=True, help="SQLite buffer path.")
@click.option("--user", default=SERVICE_USER, show_default=True,
              help="Service user that gets the files when run as root (if it exists).")  # fmt: skip
@click.option("--lang", type=click.Choice(["vi", "en"]), default="vi", show_default=True)
@click.option("--no-qr", is_flag=True, help="Do not draw the QR code on the terminal.")
def provision_init_cmd(
    site_id: str,
    name: str | None,
    lat: float | None,
    lon: float | None,
    directory: Path,
    broker: str,
    enrol_broker: str,
    ca_file: Path | None,
    centre_key: Path | None,
    token: str | None,
    store: str,
    user: str,
    lang: str,
    no_qr: bool,
) -> None:
    """Write the site's keys, certificate request, config skeleton and work-order QR code."""
    _ = gettext_for(lang).gettext
    if token == "-":  # noqa: S105 - "-" means standard input, not a password
        line: str = sys.stdin.readline()
        token = line.strip() or None
    ident = provision_init(site_id, directory, name=name, lat=lat, lon=lon, broker=broker,
                           enrol_broker=enrol_broker, ca_file=ca_file, centre_key=centre_key, token=token,
                           store=store, user=user)  # fmt: skip
    click.echo(_(_MSG_WROTE).format(site=site_id, dir=directory))
    click.echo("  " + _(_MSG_KEYS).format(key=ident.signing_key, pub=ident.public_key))
    click.echo("  " + _(_MSG_TLS).format(key=ident.tls_key, csr=ident.csr))
    click.echo("  " + _(_MSG_CONFIG).format(config=ident.config))
    missing = [n for n in ("ca.pem", "centre.pub", "enrol.token") if not (directory / "keys" / n).exists()]
    if missing:
        click.echo("  " + _(_MSG_MISSING).format(files=", ".join(missing), dir=directory / "keys"))
    else:
        click.echo("  " + _(_MSG_ENROL))
    if not no_qr:
        click.echo(terminal_qr(ident.qr_text))
    click.echo(_(_MSG_QR).format(png=ident.qr_png))
    click.echo(_(_MSG_CODE).format(code=ident.code))
