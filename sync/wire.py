"""The versioned wire schema between a site's agent and the centre, its topics and its framing.

Every message is a pydantic v2 model serialised as JSON. Batches, commands, acks, rejections,
command replies and the retained status (also the last will) travel inside a *frame*: a 6-byte
header, an Ed25519 signature and the payload (zlib-compressed JSON for batches and commands, plain
JSON for the small ones). The signature covers exactly the payload bytes (see
``docs/wire-protocol.md``). Acks and rejections carry the SHA-256 of the batch payload they answer,
so they bind to one batch's content, not just to its id.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from kernel.errors import SyncError
from kernel.readings import ClockQuality, Priority, Quality, Reading

SCHEMA_VERSION: Literal[2] = 2
STATUS_SCHEMA_VERSION: Literal[3] = 3
"""The status went to version 3 when it became a signed frame; the other messages are unchanged at 2."""
SITE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,80}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"

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


class WireModel(BaseModel):
    """Base of every wire message: unknown fields are refused, NaN and infinities travel as JSON constants."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("text holds a NUL character (\\u0000), which the centre cannot store")
    return text


def _storable_value(value: bool | int | float | str | None) -> bool | int | float | str | None:
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_VALUE:
        raise ValueError("integer value does not fit a double, which the centre cannot store")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string without NUL characters (PostgreSQL TEXT and JSONB refuse them)."""

WireSeq = Annotated[int, Field(ge=1, le=MAX_SEQ)]
"""A sequence number: positive and within a signed 64-bit integer."""

# Smart union keeps True, 1 and 1.0 apart; the validator refuses what no value column can hold.
WireValue = Annotated[Union[bool, int, float, str, None], AfterValidator(_storable_value)]


class WireReading(WireModel):
    """One reading with its store sequence number."""

    seq: WireSeq = Field(description="Sequence number, strictly increasing per site, survives restarts.")
    device: Text = Field(min_length=1, max_length=200)
    point: Text = Field(min_length=1, max_length=200)
    ts: float = Field(allow_inf_nan=False, description="UTC seconds since the epoch (finite).")
    value: WireValue
    unit: Text = Field(default="", max_length=50)
    quality: Quality = Quality.GOOD
    priority: Priority = Priority.TELEMETRY
    clock: ClockQuality = ClockQuality.SYNCED
    meta: dict[Text, Text] | None = None

    @classmethod
    def from_reading(cls, seq: int, r: Reading) -> WireReading:
        """Wrap a stored reading."""
        return cls(
            seq=seq,
            device=r.device,
            point=r.point,
            ts=r.ts,
            value=r.value,
            unit=r.unit,
            quality=r.quality,
            priority=r.priority,
            clock=r.clock,
            meta=r.meta,
        )

    def to_reading(self) -> Reading:
        """The reading without its sequence number."""
        return Reading(
            device=self.device,
            point=self.point,
            value=self.value,
            ts=self.ts,
            unit=self.unit,
            quality=self.quality,
            priority=self.priority,
            clock=self.clock,
            meta=self.meta,
        )


class BufferStats(WireModel):
    """The site buffer as seen when the batch was made."""

    depth: int = Field(ge=0, description="Readings waiting in the store (including this batch).")
    bytes: int = Field(ge=0, description="Store size on disk.")
    oldest_ts: float | None = Field(default=None, description="Timestamp of the oldest waiting reading.")
    dropped: dict[str, int] = Field(
        default_factory=dict, description="Cumulative readings dropped by the buffer cap, per priority name."
    )
    rejected: int = Field(default=0, ge=0, description="Readings kept aside after the centre rejected them.")


class Batch(WireModel):
    """A signed upload of readings (topic ``<prefix>/<site>/up/batch``)."""

    type: Literal["batch"] = "batch"
    schema_version: Literal[2] = SCHEMA_VERSION
    site_id: str = Field(pattern=SITE_PATTERN)
    batch_id: str = Field(pattern=ID_PATTERN)
    first_seq: WireSeq
    last_seq: WireSeq
    created_at: float
    readings: list[WireReading] = Field(min_length=1)
    buffer: BufferStats

    def seqs(self) -> list[int]:
        """Sequence numbers carried."""
        return [r.seq for r in self.readings]

    def check_consistent(self) -> None:
        """first_seq/last_seq bound the readings; no seq appears twice."""
        seqs = self.seqs()
        if min(seqs) != self.first_seq or max(seqs) != self.last_seq:
            raise WireError(f"batch {self.batch_id}: first_seq/last_seq do not match the readings")
        if len(set(seqs)) != len(seqs):
            raise WireError(f"batch {self.batch_id}: a seq appears twice")


class Ack(WireModel):
    """The centre has persisted a batch (topic ``<prefix>/<site>/down/ack``, signed by the centre)."""

    type: Literal["ack"] = "ack"
    schema_version: Literal[2] = SCHEMA_VERSION
    site_id: str = Field(pattern=SITE_PATTERN)
    batch_id: str = Field(pattern=ID_PATTERN)
    first_seq: int = Field(ge=1)
    last_seq: int = Field(ge=1)
    batch_sha256: str = Field(pattern=SHA256_PATTERN, description="SHA-256 of the batch's signed payload bytes.")
    stored: int = Field(ge=0, description="Readings newly stored.")
    duplicates: int = Field(ge=0, description="Readings already held (a resend); not stored again.")
    receiver: str = Field(default="", description="Which receiver instance persisted it.")


RejectReason = Literal[
    "unsigned", "bad-signature", "unknown-site", "malformed", "site-mismatch", "schema-version", "unstorable"
]
"""Why the centre refused a frame (its ``rejections`` table and metrics)."""

AnsweredReason = Literal["malformed", "site-mismatch", "schema-version", "unstorable"]
"""The reasons the centre answers: only a frame the site's own key signed can be attributed to it.
An unsigned, badly signed or unknown-site frame is counted and dropped, never answered.
``unstorable``: a valid batch whose values the centre's database refused (storing it again cannot work)."""


class Rejection(WireModel):
    """The centre refused a batch signed by the site (topic ``<prefix>/<site>/down/ack``, signed by the centre)."""

    type: Literal["reject"] = "reject"
    schema_version: Literal[2] = SCHEMA_VERSION
    site_id: str = Field(pattern=SITE_PATTERN)
    batch_id: str = Field(pattern=ID_PATTERN)
    batch_sha256: str = Field(pattern=SHA256_PATTERN, description="SHA-256 of the refused payload bytes.")
    first_seq: int | None = None
    last_seq: int | None = None
    reason: AnsweredReason
    detail: str = ""
    receiver: str = ""


DownMessage = Annotated[Union[Ack, Rejection], Field(discriminator="type")]
DOWN_ADAPTER: TypeAdapter[Ack | Rejection] = TypeAdapter(DownMessage)


class Status(WireModel):
    """Retained site status (topic ``<prefix>/<site>/status``, a frame signed by the site); the last will says ``offline``."""

    type: Literal["status"] = "status"
    schema_version: Literal[3] = STATUS_SCHEMA_VERSION
    site_id: str = Field(pattern=SITE_PATTERN)
    state: Literal["online", "offline"]
    ts: float | None = Field(
        default=None, description="When the status was made (site clock); for the last will, its connection time."
    )
    connected_at: float | None = Field(
        default=None,
        description="When the connection this status went out on began (site clock); a will's equals its ts. "
        "The centre takes a will over the older-stamped online statuses of its own connection.",
    )
    buffer: BufferStats | None = None
    in_flight: int = 0
    rejected_batches: int = Field(
        default=0, description="Batches rejected by the centre since the agent started."
    )
    last_rejection: str | None = None
    agent_version: str = ""
    config_version: int | None = Field(default=None, description="The site config version running (updates).")
    update_state: str = Field(default="", description="idle, switching, watching or rolling_back.")
    release: str | None = Field(default=None, description="The release pin the site last committed.")
    healthy: bool | None = Field(default=None, description="The agent's own /health verdict.")
    readings_per_s: float | None = Field(default=None, description="Readings accepted per second (5 s window).")


class Command(WireModel):
    """A signed command from the centre (topic ``<prefix>/<site>/down/cmd/<kind>``)."""

    type: Literal["command"] = "command"
    schema_version: Literal[2] = SCHEMA_VERSION
    command_id: str = Field(pattern=ID_PATTERN)
    target: str = Field(pattern=SITE_PATTERN, description="Site id the command is for.")
    kind: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,40}$", description="Same as the topic's last segment.")
    issued_at: float
    expires_at: float
    body: dict[str, Any] = Field(default_factory=dict)


class CommandReply(WireModel):
    """The site's answer to a command (topic ``<prefix>/<site>/up/cmd-reply``, a frame signed by the site)."""

    type: Literal["cmd-reply"] = "cmd-reply"
    schema_version: Literal[2] = SCHEMA_VERSION
    site_id: str = Field(pattern=SITE_PATTERN)
    command_id: str
    outcome: Literal["accepted", "refused", "failed"]
    reason: str = ""
    ts: float
    phase: Literal["", "staged", "committed", "rolled-back", "aborted"] = Field(
        default="", description="Updates only: which step this reply reports (a second reply follows the watch)."
    )
    version: int | None = Field(default=None, description="Updates only: the version concerned.")


WIRE_MODELS: dict[str, type[WireModel]] = {
    "batch": Batch,
    "ack": Ack,
    "rejection": Rejection,
    "status": Status,
    "command": Command,
    "command-reply": CommandReply,
}


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


def encode_batch_payload(batch: Batch, level: int = ZLIB_LEVEL) -> bytes:
    """The compressed payload of a batch (what gets signed)."""
    return compress(batch.model_dump_json().encode(), level)


def batch_json(
    site_id: str,
    batch_id: str,
    created_at: float,
    readings: Sequence[tuple[int, Reading]],
    buffer: BufferStats,
) -> bytes:
    """The JSON document of a batch, built straight from stored readings (seq, reading), oldest first.

    The agent's hot path: the same document :class:`Batch` serialises to (a hypothesis test checks
    they decode alike), without building a pydantic object per reading.
    """
    doc = {
        "type": "batch",
        "schema_version": SCHEMA_VERSION,
        "site_id": site_id,
        "batch_id": batch_id,
        "first_seq": readings[0][0],
        "last_seq": readings[-1][0],
        "created_at": created_at,
        "readings": [
            {
                "seq": seq,
                "device": r.device,
                "point": r.point,
                "ts": r.ts,
                "value": r.value,
                "unit": r.unit,
                "quality": int(r.quality),
                "priority": int(r.priority),
                "clock": int(r.clock),
                "meta": r.meta,
            }
            for seq, r in readings
        ],
        "buffer": buffer.model_dump(),
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# A stored row as the store hands it to the uplink, in this column order (no object per reading):
# seq, priority, ts, device, point, value, value type tag, unit, quality, clock, meta as JSON text.
StoredRow = tuple[int, int, float, str, str, Any, int, str, int, int, "str | None"]
VT_FLOAT, VT_INT, VT_STR, VT_BOOL, VT_NULL = range(5)

_json_str = json.JSONEncoder(ensure_ascii=False).encode
_float_repr = float.__repr__
_INF_NAN = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}


def _json_number(value: float) -> str:
    text = _float_repr(value)
    return _INF_NAN.get(text, text)


def batch_json_rows(
    site_id: str,
    batch_id: str,
    created_at: float,
    rows: Sequence[StoredRow],
    buffer: BufferStats,
) -> bytes:
    """The JSON document of a batch written straight from stored rows, oldest first.

    The uplink's hot path: the same document :func:`batch_json` makes from readings (a hypothesis
    test checks they decode alike), without a Python object or dict per reading. Device, point and
    unit names repeat from poll to poll, so their JSON text is made once per batch.
    """
    names: dict[str, str] = {}
    parts: list[str] = []
    append = parts.append
    for seq, priority, ts, device, point, value, vtype, unit, quality, clock, meta in rows:
        d = names.get(device)
        if d is None:
            d = names[device] = _json_str(device)
        p = names.get(point)
        if p is None:
            p = names[point] = _json_str(point)
        u = names.get(unit)
        if u is None:
            u = names[unit] = _json_str(unit)
        if vtype == VT_FLOAT:
            v = "null" if value is None else _json_number(float(value))
        elif vtype == VT_INT:
            v = str(int(value))
        elif vtype == VT_BOOL:
            v = "true" if value else "false"
        elif vtype == VT_STR:
            v = _json_str(value)
        else:
            v = "null"
        append(
            f'{{"seq":{seq},"device":{d},"point":{p},"ts":{_json_number(ts)},"value":{v},"unit":{u},'
            f'"quality":{quality},"priority":{priority},"clock":{clock},"meta":{meta or "null"}}}'
        )
    return _batch_document(site_id, batch_id, created_at, rows[0][0], rows[-1][0], ",".join(parts), buffer)


def _batch_document(
    site_id: str, batch_id: str, created_at: float, first: int, last: int, readings: str, buffer: BufferStats
) -> bytes:
    """A batch's JSON around the text of its readings (the items of ``readings``, comma-joined)."""
    head = json.dumps(
        {
            "type": "batch",
            "schema_version": SCHEMA_VERSION,
            "site_id": site_id,
            "batch_id": batch_id,
            "first_seq": first,
            "last_seq": last,
            "created_at": created_at,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    tail = json.dumps(buffer.model_dump(), ensure_ascii=False, separators=(",", ":"))
    return f'{head[:-1]},"readings":[{readings}],"buffer":{tail}}}'.encode()


def batch_json_chunks(
    site_id: str,
    batch_id: str,
    created_at: float,
    chunks: Sequence[tuple[int, int, int, str]],
    buffer: BufferStats,
) -> bytes:
    """The JSON document of a batch from stored rows that already hold their readings' JSON
    (``(seq_first, seq_last, priority, text)``, oldest first; :mod:`sync.rowcodec`): a concatenation.

    The same document :func:`batch_json_rows` writes for those readings (a test checks it byte for byte).
    """
    body = ",".join([c[3] for c in chunks])
    return _batch_document(site_id, batch_id, created_at, chunks[0][0], chunks[-1][1], body, buffer)


def decode_batch(frame: Frame) -> Batch:
    """Validate the JSON inside a frame as a :class:`Batch`."""
    try:
        batch = Batch.model_validate_json(frame.json_bytes())
    except ValidationError as exc:
        raise WireError(f"not a valid batch: {_first_error(exc)}") from exc
    batch.check_consistent()
    if frame.msg_id and frame.msg_id != batch.batch_id:
        raise WireError(f"frame id {frame.msg_id!r} differs from the signed batch id {batch.batch_id!r}")
    return batch


def content_hash(payload: bytes) -> str:
    """SHA-256 (hex) of a frame's payload bytes: what an ack or a rejection is bound to."""
    return hashlib.sha256(payload).hexdigest()


def peek_batch_ids(frame: Frame) -> tuple[str | None, int | None, int | None]:
    """Best-effort batch id and seq range of a frame whose signature verified but whose batch does not."""
    header_id = frame.msg_id if re.match(ID_PATTERN, frame.msg_id) else None
    try:
        doc = json.loads(frame.json_bytes())
    except (WireError, ValueError):
        return header_id, None, None
    if not isinstance(doc, dict):
        return header_id, None, None
    bid, first, last = doc.get("batch_id"), doc.get("first_seq"), doc.get("last_seq")
    return (
        bid if isinstance(bid, str) and re.match(ID_PATTERN, bid) else header_id,
        first if isinstance(first, int) else None,
        last if isinstance(last, int) else None,
    )


def decode_down(data: bytes) -> Ack | Rejection:
    """Parse the JSON of a message from ``down/ack`` (inside its verified frame)."""
    try:
        return DOWN_ADAPTER.validate_json(data)
    except ValidationError as exc:
        raise WireError(f"not an ack or rejection: {_first_error(exc)}") from exc


def decode_status(frame: Frame) -> Status:
    """Validate the JSON inside a (verified) frame as a :class:`Status`."""
    try:
        return Status.model_validate_json(frame.json_bytes())
    except ValidationError as exc:
        raise WireError(f"not a valid status: {_first_error(exc)}") from exc


def encode_command_payload(cmd: Command) -> bytes:
    """The compressed payload of a command (what the centre signs)."""
    return compress(cmd.model_dump_json().encode())


def encode_small(msg: WireModel) -> bytes:
    """The plain JSON payload of an ack, a rejection or a command reply (what gets signed)."""
    return msg.model_dump_json().encode()


def decode_command(frame: Frame) -> Command:
    """Validate the JSON inside a frame as a :class:`Command`."""
    try:
        return Command.model_validate_json(frame.json_bytes())
    except ValidationError as exc:
        raise WireError(f"not a valid command: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def wire_json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every wire message, keyed by a file stem."""
    return {name: model.model_json_schema() for name, model in WIRE_MODELS.items()}
