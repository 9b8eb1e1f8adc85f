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

from kernel.config_base import StrictModel, check_secret_file, load_yaml, validation_problems
from kernel.errors import ConfigError, SignatureError, SyncError
from sync.wire import (
    SITE_PATTERN,
    Command,
    Frame,
    WireError,
    decode_command,
    encode_command_payload,
    pack_frame,
    unpack_frame,
)


class CommandRefused(SyncError):
    """A verified command that this site must not execute (wrong target, or another kind than its topic's)."""


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key; the file must be mode 0600 or stricter."""
    try:
        check_secret_file(path)
    except ValueError as exc:
        raise SignatureError(str(exc)) from exc
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"{path}: cannot read an Ed25519 public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key")
    return key


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
    data: bytes, centre_keys: list[Ed25519PublicKey], site_id: str, kind: str | None = None
) -> Command:
    """Verify and decode a command frame for this site; raise instead of returning anything doubtful.

    Raises :class:`SignatureError` (unsigned or bad signature), :class:`~sync.wire.WireError`
    (not a command, id mismatch) or :class:`CommandRefused` (another target, another kind than the
    topic's), whose message is the reason for the :class:`CommandReply`. Time is not checked here:
    expiry and issue time are :class:`kernel.commands.CommandRouter`'s one policy, which knows
    whether the site's clock can be trusted (docs/wire-protocol.md).
    """
    frame = open_signed(data, centre_keys)
    cmd = decode_command(frame)
    if frame.msg_id and frame.msg_id != cmd.command_id:
        raise WireError(f"frame id {frame.msg_id!r} differs from the signed command id {cmd.command_id!r}")
    if cmd.target != site_id:
        raise CommandRefused(f"command {cmd.command_id} is for site {cmd.target!r}, not {site_id!r}")
    if kind is not None and cmd.kind != kind:
        raise CommandRefused(f"command {cmd.command_id} is a {cmd.kind!r} command on the {kind!r} topic")
    return cmd
