"""The wire's framing, topics and limits: what both ends share besides the messages themselves.

A frame is a 6-byte header, the message id, an Ed25519 signature and the payload (zlib-compressed
JSON for batches and commands, plain JSON for the small ones); the signature covers exactly the
payload bytes (``docs/wire-protocol.md``). Nothing here imports a schema library: the agent's
process uses this module with :mod:`sync.wire_msgs` (msgspec); the centre's :mod:`sync.wire`
(pydantic) re-exports it.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Literal

from kernel.errors import SyncError

SCHEMA_VERSION: Literal[2] = 2
STATUS_SCHEMA_VERSION: Literal[3] = 3
"""The status went to version 3 when it became a signed frame; the other messages are unchanged at 2."""
SITE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,80}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
KIND_PATTERN = r"^[a-z][a-z0-9_-]{0,40}$"
"""A command kind: the last segment of its topic."""


def anchored(pattern: str) -> str:
    """``pattern`` with its final ``$`` as ``\\Z``: in Python's ``re`` (msgspec's patterns too) ``$`` also
    matches before a final newline, in pydantic's it does not, and a value one side takes and the
    other refuses (``"b-1\\n"``) would reach a model that raises where nothing expects it."""
    return pattern.removesuffix("$") + r"\Z"


SITE_RE = re.compile(anchored(SITE_PATTERN))
ID_RE = re.compile(anchored(ID_PATTERN))

# What the centre's database can hold (docs/wire-protocol.md, "Values the centre can store"): a
# seq is a signed 64-bit integer (BIGINT, SQLite INTEGER), an integer value must convert to a
# finite double (DOUBLE PRECISION, REAL) and no text may contain NUL (PostgreSQL TEXT and JSONB).
MAX_SEQ = 2**63 - 1
MAX_INT_VALUE = int(sys.float_info.max)

# Frame: magic "KB", frame version, codec, signature length (0 or 64), id length, then the id
# (batch or command id, ASCII; outside the payload so even a mangled payload can be answered).
FRAME_MAGIC = b"KB"
FRAME_VERSION = 1
CODEC_JSON = 0
CODEC_ZLIB_JSON = 1
_HEADER = struct.Struct("!2sBBBB")
SIGNATURE_LEN = 64
ZLIB_LEVEL = 6


class WireError(SyncError, ValueError):
    """A message or frame cannot be decoded or does not match the wire schema."""


@dataclass(frozen=True)
class Topics:
    """The topic table for one site (or ``+`` for a receiver's wildcard)."""

    prefix: str
    site: str

    @property
    def batch(self) -> str:
        """Agent -> centre, QoS 1, signed frame."""
        return f"{self.prefix}/{self.site}/up/batch"

    @property
    def ack(self) -> str:
        """Centre -> agent, QoS 1, Ack or Rejection in a frame signed by the centre."""
        return f"{self.prefix}/{self.site}/down/ack"

    @property
    def status(self) -> str:
        """Agent -> anyone, QoS 1, retained Status in a frame signed by the site; also the last will."""
        return f"{self.prefix}/{self.site}/status"

    def command(self, kind: str) -> str:
        """Centre -> agent, QoS 1, signed Command frame."""
        return f"{self.prefix}/{self.site}/down/cmd/{kind}"

    @property
    def commands(self) -> str:
        """Subscription for every command kind."""
        return f"{self.prefix}/{self.site}/down/cmd/+"

    @property
    def cmd_reply(self) -> str:
        """Agent -> centre, QoS 1, CommandReply in a frame signed by the site."""
        return f"{self.prefix}/{self.site}/up/cmd-reply"


def shared_batch_subscription(group: str, prefix: str = "kbe") -> str:
    """What a receiver of a load-sharing group subscribes to."""
    return f"$share/{group}/{prefix}/+/up/batch"


def site_of_topic(topic: str) -> str:
    """The site segment of a ``<prefix>/<site>/...`` topic."""
    parts = topic.split("/")
    if len(parts) < 3:
        raise WireError(f"topic {topic!r} has no site segment")
    return parts[1]


# --- framing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A decoded frame: the signature (empty when unsigned) and the exact payload bytes it covers."""

    codec: int
    signature: bytes
    payload: bytes
    msg_id: str = ""

    def json_bytes(self) -> bytes:
        """The JSON document inside the payload."""
        if self.codec == CODEC_JSON:
            return self.payload
        try:
            # Bounded: a batch is at most 16 MiB compressed; refuse decompression bombs past 64 MiB.
            d = zlib.decompressobj()
            out = d.decompress(self.payload, 64 * 1024 * 1024)
            if d.unconsumed_tail or not d.eof:
                raise WireError("payload does not decompress to a complete document under 64 MiB")
            return out
        except zlib.error as exc:
            raise WireError(f"payload is not zlib data: {exc}") from exc


def compress(document: bytes, level: int = ZLIB_LEVEL) -> bytes:
    """The payload bytes for a JSON document."""
    return zlib.compress(document, level)


def pack_frame(payload: bytes, signature: bytes = b"", codec: int = CODEC_ZLIB_JSON, msg_id: str = "") -> bytes:
    """Header + id + signature + payload."""
    if len(signature) not in (0, SIGNATURE_LEN):
        raise WireError(f"signature must be 0 or {SIGNATURE_LEN} bytes, got {len(signature)}")
    ident = msg_id.encode("ascii")
    if len(ident) > 255:
        raise WireError("frame id longer than 255 bytes")
    header = _HEADER.pack(FRAME_MAGIC, FRAME_VERSION, codec, len(signature), len(ident))
    return header + ident + signature + payload


def unpack_frame(data: bytes) -> Frame:
    """Split a frame; raise :class:`WireError` when the header is wrong."""
    if len(data) < _HEADER.size:
        raise WireError(f"frame of {len(data)} bytes is shorter than its header")
    magic, version, codec, sig_len, id_len = _HEADER.unpack_from(data)
    if magic != FRAME_MAGIC:
        raise WireError("frame does not start with the KB magic")
    if version != FRAME_VERSION:
        raise WireError(f"frame version {version} is not supported (this agent speaks {FRAME_VERSION})")
    if codec not in (CODEC_JSON, CODEC_ZLIB_JSON):
        raise WireError(f"unknown codec {codec}")
    if sig_len not in (0, SIGNATURE_LEN):
        raise WireError(f"signature length {sig_len} is not 0 or {SIGNATURE_LEN}")
    sig_start = _HEADER.size + id_len
    start = sig_start + sig_len
    if len(data) <= start:
        raise WireError("frame has no payload")
    try:
        ident = bytes(data[_HEADER.size : sig_start]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise WireError("frame id is not ASCII") from exc
    return Frame(codec, bytes(data[sig_start:start]), bytes(data[start:]), ident)


def content_hash(payload: bytes) -> str:
    """SHA-256 (hex) of a frame's payload bytes: what an ack or a rejection is bound to."""
    return hashlib.sha256(payload).hexdigest()


def peek_batch_ids(frame: Frame) -> tuple[str | None, int | None, int | None]:
    """Best-effort batch id and seq range of a frame whose signature verified but whose batch does not."""
    header_id = frame.msg_id if ID_RE.match(frame.msg_id) else None
    try:
        doc = json.loads(frame.json_bytes())
    except (WireError, ValueError):
        return header_id, None, None
    if not isinstance(doc, dict):
        return header_id, None, None
    bid, first, last = doc.get("batch_id"), doc.get("first_seq"), doc.get("last_seq")
    return (
        bid if isinstance(bid, str) and ID_RE.match(bid) else header_id,
        first if isinstance(first, int) else None,
        last if isinstance(last, int) else None,
    )
