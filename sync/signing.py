"""Ed25519 signatures on frames, key files, and the centre's registry of site public keys.

The signature covers the exact compressed payload bytes of a frame (RFC 8032 Ed25519, via
``cryptography``). Private keys are PEM (PKCS#8, unencrypted) files of mode 0600; a looser mode
is refused. Public keys are PEM SubjectPublicKeyInfo files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

import click
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError

from kernel.config_base import (
    StrictModel,
    check_secret_file,
    load_yaml,
    read_limited,
    validation_problems,
)
from kernel.errors import ConfigError, SignatureError, SyncError
from sync.wire import (
    CODEC_JSON,
    SITE_PATTERN,
    Ack,
    Command,
    CommandReply,
    Frame,
    Rejection,
    WireError,
    WireModel,
    decode_command,
    decode_down,
    encode_command_payload,
    encode_small,
    pack_frame,
    unpack_frame,
)

# A command stamped this far ahead of the site's clock is refused (an RTC-less board may lag a bit).
CLOCK_SKEW_S = 300.0
KEY_FILE_LIMIT = 64 * 1024  # a PEM key is a few hundred bytes


class CommandRefused(SyncError):
    """A verified command that this site must not execute (wrong target or kind, expired)."""


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key; the file must be mode 0600 or stricter."""
    try:
        check_secret_file(path)
    except ValueError as exc:
        raise SignatureError(str(exc)) from exc
    try:
        data = read_limited(path, KEY_FILE_LIMIT)
    except ValueError as exc:
        raise SignatureError(str(exc)) from exc
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise SignatureError(f"{path}: is a public key; the signing key must be the private one (site.key)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not an unencrypted PEM private key ({_first_line(exc)})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM)."""
    try:
        data = read_limited(path, KEY_FILE_LIMIT)
    except ValueError as exc:
        raise SignatureError(f"cannot read an Ed25519 public key: {exc}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(f"{path}: not a PEM public key ({_first_line(exc)})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key")
    return key


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def public_pem(key: Ed25519PublicKey) -> bytes:
    """PEM text of a public key."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_keypair(out_dir: Path, name: str = "site") -> tuple[Path, Path]:
    """Write ``<name>.key`` (mode 0600) and ``<name>.pub`` into ``out_dir``; refuse to overwrite."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise SignatureError(f"{p} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600 from the first byte: no window where the key is world-readable.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(public_pem(key.public_key()))
    return key_path, pub_path


def ensure_keypair(out_dir: Path, name: str) -> tuple[Path, Path]:
    """The ``<name>.key``/``<name>.pub`` pair in ``out_dir``, generated the first time (labs, tests, the demo)."""
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if key_path.exists() and pub_path.exists():
        return key_path, pub_path
    return generate_keypair(out_dir, name)


class Signer:
    """Signs payloads with one private key and packs them into frames."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """Load the key from a 0600 PEM file."""
        return cls(load_private_key(path))

    def public_key(self) -> Ed25519PublicKey:
        """The matching public key."""
        return self._key.public_key()

    def sign(self, payload: bytes) -> bytes:
        """64-byte Ed25519 signature of ``payload``."""
        return self._key.sign(payload)

    def frame(self, payload: bytes, msg_id: str = "") -> bytes:
        """A signed frame carrying ``payload`` (and the batch or command id in its header)."""
        return pack_frame(payload, self.sign(payload), msg_id=msg_id)

    def small_frame(self, msg: WireModel, msg_id: str = "") -> bytes:
        """A signed plain-JSON frame for an ack, a rejection or a command reply."""
        payload = encode_small(msg)
        return pack_frame(payload, self.sign(payload), codec=CODEC_JSON, msg_id=msg_id)


def verify_frame(frame: Frame, keys: list[Ed25519PublicKey]) -> None:
    """Raise :class:`SignatureError` unless one of ``keys`` verifies the frame's signature."""
    if not frame.signature:
        raise SignatureError("frame is unsigned")
    for key in keys:
        try:
            key.verify(frame.signature, frame.payload)
            return
        except InvalidSignature:
            continue
    raise SignatureError("signature does not verify against any registered key")


def open_signed(data: bytes, keys: list[Ed25519PublicKey]) -> Frame:
    """Unpack a frame and verify its signature."""
    frame = unpack_frame(data)
    verify_frame(frame, keys)
    return frame


def open_down(data: bytes, centre_keys: list[Ed25519PublicKey]) -> Ack | Rejection:
    """Verify an ack or rejection frame against the centre's keys, then decode it.

    Raises :class:`SignatureError` (unsigned, or no registered centre key verifies it) or
    :class:`~sync.wire.WireError` (not a frame, or a verified frame that is not an ack or rejection).
    """
    frame = open_signed(data, centre_keys)
    msg = decode_down(frame.json_bytes())
    if frame.msg_id and frame.msg_id != msg.batch_id:
        raise WireError(f"frame id {frame.msg_id!r} differs from the signed batch id {msg.batch_id!r}")
    return msg


def open_reply(data: bytes, site_keys: list[Ed25519PublicKey]) -> CommandReply:
    """Verify a command reply frame against the site's keys, then decode it (the centre's side)."""
    frame = open_signed(data, site_keys)
    try:
        return CommandReply.model_validate_json(frame.json_bytes())
    except ValidationError as exc:
        raise WireError(f"not a command reply: {exc.errors(include_url=False)[0]['msg']}") from exc


def load_public_keys(paths: list[Path]) -> list[Ed25519PublicKey]:
    """Every public key of a list of PEM files; the first bad one raises :class:`SignatureError`."""
    return [load_public_key(p) for p in paths]


class SiteEntry(StrictModel):
    """One site in the registry: its public keys (more than one while a key is being rotated)."""

    public_keys: list[Path] = Field(min_length=1)


class RegistryFile(StrictModel):
    """The receiver's ``--sites`` file."""

    sites: dict[str, SiteEntry]


class SiteRegistry:
    """Site id -> registered public keys (what the receiver verifies batches against)."""

    def __init__(self, keys: Mapping[str, list[Ed25519PublicKey]]) -> None:
        self._keys = {site: list(k) for site, k in keys.items()}

    @classmethod
    def load(cls, path: Path) -> SiteRegistry:
        """Read a YAML registry; key paths are relative to the file. Problems raise ConfigError."""
        data = load_yaml(path)
        try:
            reg = RegistryFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(str(path), validation_problems(exc)) from exc
        import re

        keys: dict[str, list[Ed25519PublicKey]] = {}
        problems = []
        for site, entry in reg.sites.items():
            if not re.match(SITE_PATTERN, site):
                problems.append(f"sites.{site}: {site!r} is not a valid site id")
                continue
            for i, p in enumerate(entry.public_keys):
                full = p if p.is_absolute() else path.parent / p
                try:
                    keys.setdefault(site, []).append(load_public_key(full))
                except SignatureError as exc:
                    problems.append(f"sites.{site}.public_keys[{i}]: {exc}")
        if problems:
            raise ConfigError(str(path), problems)
        return cls(keys)

    def keys_for(self, site_id: str) -> list[Ed25519PublicKey] | None:
        """The keys of a site, or None when it is not registered."""
        return self._keys.get(site_id)

    def __contains__(self, site_id: object) -> bool:
        return site_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)


@click.group("keys")
def keys_cli() -> None:
    """Site signing keys (Ed25519)."""


@keys_cli.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="site", show_default=True, help="File stem: <name>.key and <name>.pub.")
def keys_generate(out_dir: Path, name: str) -> None:
    """Write a new private key (mode 0600) and its public key into OUT."""
    key_path, pub_path = generate_keypair(out_dir, name)
    click.echo(f"private key: {key_path} (mode 0600; keep it on the device)")
    click.echo(f"public key:  {pub_path} (register it with the centre)")


def sign_command(cmd: Command, signer: Signer) -> bytes:
    """The frame the centre publishes on ``<prefix>/<site>/down/cmd/<kind>``."""
    return signer.frame(encode_command_payload(cmd), cmd.command_id)


def open_command(
    data: bytes, centre_keys: list[Ed25519PublicKey], site_id: str, now: float, kind: str | None = None
) -> Command:
    """Verify and decode a command frame for this site; raise instead of returning anything doubtful.

    Raises :class:`SignatureError` (unsigned or bad signature), :class:`~sync.wire.WireError`
    (not a command, id mismatch) or :class:`CommandRefused` (another target, another kind than the
    topic's, not yet valid, expired), whose message is the reason for the :class:`CommandReply`.
    """
    frame = open_signed(data, centre_keys)
    cmd = decode_command(frame)
    if frame.msg_id and frame.msg_id != cmd.command_id:
        raise WireError(f"frame id {frame.msg_id!r} differs from the signed command id {cmd.command_id!r}")
    if cmd.target != site_id:
        raise CommandRefused(f"command {cmd.command_id} is for site {cmd.target!r}, not {site_id!r}")
    if kind is not None and cmd.kind != kind:
        raise CommandRefused(f"command {cmd.command_id} is a {cmd.kind!r} command on the {kind!r} topic")
    if now >= cmd.expires_at:
        raise CommandRefused(f"command {cmd.command_id} expired at {cmd.expires_at:.0f}")
    if cmd.issued_at > now + CLOCK_SKEW_S:
        raise CommandRefused(f"command {cmd.command_id} is issued in the future ({cmd.issued_at:.0f})")
    return cmd
