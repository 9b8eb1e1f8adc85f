"""Ed25519 signatures on frames, key files, and the centre's registry of site public keys.

The signature covers the exact compressed payload bytes of a frame (RFC 8032 Ed25519). Keys in
the usual PEM forms are handled by :mod:`sync.ed25519` on the OpenSSL the interpreter has loaded;
``cryptography`` is imported only for other forms, key generation and conversions. Private keys are
PEM (PKCS#8, unencrypted) files of mode 0600; a looser mode is refused. Public keys are PEM
SubjectPublicKeyInfo files.

What the agent's process calls (signing, ``open_down``, ``open_command``, ``sign_status``) imports
no pydantic: messages go through :mod:`sync.wire_msgs`. The centre's functions (``open_reply``,
``open_status``, ``sign_command``, the site registry) import :mod:`sync.wire` when called.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kernel.errors import ConfigError, SignatureError, SyncError
from sync import ed25519
from sync.ed25519 import AnyPrivateKey, AnyPublicKey
from sync.wire_base import CODEC_JSON, SITE_RE, Frame, WireError, pack_frame, unpack_frame
from sync.wire_msgs import (
    Ack,
    Command,
    PydanticMessage,
    Rejection,
    Status,
    WireStruct,
    decode_command,
    decode_down,
    encode_small,
)

if TYPE_CHECKING:
    from sync import wire

log = logging.getLogger("kbe.registry")

# A command stamped this far ahead of the site's clock is refused (an RTC-less board may lag a bit).
CLOCK_SKEW_S = 300.0
KEY_FILE_LIMIT = 64 * 1024  # a PEM key is a few hundred bytes


class CommandRefused(SyncError):
    """A verified command that this site must not execute (wrong target, or another kind than its topic's)."""


def load_private_key(path: Path) -> AnyPrivateKey:
    """Read an Ed25519 private key; the file must be mode 0600 or stricter."""
    from kernel.config_files import check_secret_file, read_limited

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
    light = ed25519.private_from_pem(data)
    if light is not None:
        return light
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not an unencrypted PEM private key ({_first_line(exc)})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> AnyPublicKey:
    """Read an Ed25519 public key (PEM)."""
    from kernel.config_files import read_limited

    try:
        data = read_limited(path, KEY_FILE_LIMIT)
    except ValueError as exc:
        raise SignatureError(f"cannot read an Ed25519 public key: {exc}") from exc
    light = ed25519.public_from_pem(data)
    if light is not None:
        return light
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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


def public_pem(key: AnyPublicKey) -> bytes:
    """PEM text of a public key."""
    if isinstance(key, ed25519.PublicKey):
        return key.pem()
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_keypair(out_dir: Path, name: str = "site") -> tuple[Path, Path]:
    """Write ``<name>.key`` (mode 0600) and ``<name>.pub`` into ``out_dir``; refuse to overwrite."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise SignatureError(f"{p} exists; refusing to overwrite a key")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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

    def __init__(self, key: AnyPrivateKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """Load the key from a 0600 PEM file."""
        return cls(load_private_key(path))

    def public_key(self) -> AnyPublicKey:
        """The matching public key."""
        return self._key.public_key()

    def sign(self, payload: bytes) -> bytes:
        """64-byte Ed25519 signature of ``payload``."""
        return self._key.sign(payload)

    def frame(self, payload: bytes, msg_id: str = "") -> bytes:
        """A signed frame carrying ``payload`` (and the batch or command id in its header)."""
        return pack_frame(payload, self.sign(payload), msg_id=msg_id)

    def small_frame(self, msg: WireStruct | PydanticMessage, msg_id: str = "") -> bytes:
        """A signed plain-JSON frame for an ack, a rejection, a status or a command reply (the
        agent's :mod:`sync.wire_msgs` structs or the centre's :mod:`sync.wire` models)."""
        payload = encode_small(msg)
        return pack_frame(payload, self.sign(payload), codec=CODEC_JSON, msg_id=msg_id)


def verifies(key: AnyPublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``key``'s Ed25519 signature of ``data`` (either kind of key)."""
    if isinstance(key, ed25519.PublicKey):
        return key.verifies(signature, data)
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def verify_frame(frame: Frame, keys: Sequence[AnyPublicKey]) -> None:
    """Raise :class:`SignatureError` unless one of ``keys`` verifies the frame's signature."""
    if not frame.signature:
        raise SignatureError("frame is unsigned")
    if any(verifies(key, frame.signature, frame.payload) for key in keys):
        return
    raise SignatureError("signature does not verify against any registered key")


def open_signed(data: bytes, keys: Sequence[AnyPublicKey]) -> Frame:
    """Unpack a frame and verify its signature."""
    frame = unpack_frame(data)
    verify_frame(frame, keys)
    return frame


def open_down(data: bytes, centre_keys: Sequence[AnyPublicKey]) -> Ack | Rejection:
    """Verify an ack or rejection frame against the centre's keys, then decode it.

    Raises :class:`SignatureError` (unsigned, or no registered centre key verifies it) or
    :class:`~sync.wire.WireError` (not a frame, or a verified frame that is not an ack or rejection).
    """
    frame = open_signed(data, centre_keys)
    msg = decode_down(frame.json_bytes())
    if frame.msg_id and frame.msg_id != msg.batch_id:
        raise WireError(f"frame id {frame.msg_id!r} differs from the signed batch id {msg.batch_id!r}")
    return msg


def open_reply(data: bytes, site_keys: Sequence[AnyPublicKey]) -> wire.CommandReply:
    """Verify a command reply frame against the site's keys, then decode it (the centre's side)."""
    from pydantic import ValidationError

    from sync.wire import CommandReply

    frame = open_signed(data, site_keys)
    try:
        return CommandReply.model_validate_json(frame.json_bytes())
    except ValidationError as exc:
        raise WireError(f"not a command reply: {exc.errors(include_url=False)[0]['msg']}") from exc


def sign_status(status: Status | wire.Status, signer: Signer) -> bytes:
    """The frame a site publishes (retained) on ``<prefix>/<site>/status``, and sets as its last will:
    plain JSON (codec 0) signed by the site's key, the site id in the header."""
    return signer.small_frame(status, status.site_id)


def open_status(data: bytes, site_keys: Sequence[AnyPublicKey], site_id: str) -> wire.Status:
    """Verify a status frame against the site's keys, then decode it (the centre's side).

    Raises :class:`SignatureError` (not signed, or no key of the site verifies it; a plain-JSON
    status is unsigned) or :class:`~sync.wire.WireError` (not a frame, not a status, or a status
    that names another site than ``site_id``, the site of its topic).
    """
    from sync.wire import decode_status

    if data[:1] == b"{":
        raise SignatureError("status is unsigned (plain JSON)")
    frame = open_signed(data, site_keys)
    status = decode_status(frame)
    if status.site_id != site_id or (frame.msg_id and frame.msg_id != site_id):
        raise WireError(f"status signed for site {status.site_id!r} on the topic of {site_id!r}")
    return status


def load_public_keys(paths: list[Path]) -> list[AnyPublicKey]:
    """Every public key of a list of PEM files; the first bad one raises :class:`SignatureError`."""
    return [load_public_key(p) for p in paths]


class SiteRegistry:
    """Site id -> registered public keys (what the receiver verifies batches against).

    Loaded from a file, it follows that file without a restart: :meth:`keys_for` looks at the
    file's mtime, size and inode at most once every ``check_every_s`` (monotonic clock), and before
    answering that a site is unknown, and reloads when they changed; :meth:`request_reload` (the
    receiver's SIGHUP) makes the next lookup reload.
    A file that fails to load keeps the previous registry in force and is logged, so a half-edited
    file never drops every site.
    """

    def __init__(
        self,
        keys: Mapping[str, list[AnyPublicKey]],
        path: Path | None = None,
        check_every_s: float = 1.0,
    ) -> None:
        self._keys = {site: list(k) for site, k in keys.items()}
        self.path = path
        self.check_every_s = check_every_s
        self._stamp = _file_stamp(path) if path is not None else None
        self._next_check = time.monotonic() + check_every_s
        self._forced = False
        self.reloads = 0
        self.reload_errors = 0
        self.last_error = ""
        self.groups: dict[str, list[str]] = {}

    @classmethod
    def load(cls, path: Path, check_every_s: float = 1.0) -> SiteRegistry:
        """Read a YAML registry; key paths are relative to the file. Problems raise ConfigError."""
        stamp = _file_stamp(path)
        keys, groups = _read_registry(path)
        reg = cls(keys, path, check_every_s)
        reg._stamp = stamp
        reg.groups = groups
        return reg

    def request_reload(self) -> None:
        """Reload at the next lookup whatever the mtime says (safe to call from a signal handler)."""
        self._forced = True

    def refresh(self) -> bool:
        """Reload now if the file changed (or a reload was requested); True when the keys were replaced."""
        if self.path is None:
            return False
        forced, self._forced = self._forced, False
        self._next_check = time.monotonic() + self.check_every_s
        stamp = _file_stamp(self.path)
        if not forced and stamp == self._stamp:
            return False
        try:
            keys, groups = _read_registry(self.path)
        except ConfigError as exc:
            self._stamp = stamp  # try again when it changes once more
            self.reload_errors += 1
            self.last_error = "; ".join(exc.problems[:3])
            log.error("site registry %s not reloaded, the previous one stays in force: %s", self.path, self.last_error)
            return False
        added = sorted(set(keys) - set(self._keys))
        self._keys, self.groups, self._stamp = keys, groups, stamp
        self.reloads += 1
        log.info("site registry %s reloaded: %d sites%s", self.path, len(keys), f" (new: {', '.join(added)})" if added else "")
        return True

    def poll(self) -> None:
        """Reload when a reload was requested or the check interval passed and the file changed."""
        if self.path is not None and (self._forced or time.monotonic() >= self._next_check):
            self.refresh()

    def sites(self, group: str | None = None) -> list[str]:
        """Registered site ids, all or those of one group, sorted."""
        self.poll()
        return sorted(s for s in self._keys if group is None or group in self.groups.get(s, []))

    def keys_for(self, site_id: str) -> list[AnyPublicKey] | None:
        """The keys of a site, or None when it is not registered.

        An unknown site makes the registry look at its file once more before answering None: a
        site that has just enrolled sends its first batch within the second its key was added,
        and must not see that batch refused (a stat per unknown-site batch is cheap next to the
        rejection the receiver records anyway)."""
        self.poll()
        keys = self._keys.get(site_id)
        if keys is None and self.path is not None and self.refresh():
            keys = self._keys.get(site_id)
        return keys

    def __contains__(self, site_id: object) -> bool:
        return site_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)


def _file_stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read_registry(path: Path) -> tuple[dict[str, list[AnyPublicKey]], dict[str, list[str]]]:
    from pydantic import ValidationError

    from kernel.config_base import load_yaml, validation_problems
    from sync.registry_file import RegistryFile

    data = load_yaml(path)
    try:
        reg = RegistryFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), validation_problems(exc)) from exc
    keys: dict[str, list[AnyPublicKey]] = {}
    problems = []
    for site, entry in reg.sites.items():
        if not SITE_RE.match(site):
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
    return keys, {site: list(entry.groups) for site, entry in reg.sites.items()}


def sign_command(cmd: wire.Command, signer: Signer) -> bytes:
    """The frame the centre publishes on ``<prefix>/<site>/down/cmd/<kind>``."""
    from sync.wire import encode_command_payload

    return signer.frame(encode_command_payload(cmd), cmd.command_id)


def open_command(
    data: bytes, centre_keys: Sequence[AnyPublicKey], site_id: str, kind: str | None = None
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
