"""The versioned wire schema between a site's agent and the centre, as pydantic v2 models.

Every message is serialised as JSON. Batches, commands, acks, rejections, command replies and the
retained status (also the last will) travel inside a *frame* (:mod:`sync.wire_base`: header,
Ed25519 signature, payload; the signature covers exactly the payload bytes, see
``docs/wire-protocol.md``). Acks and rejections carry the SHA-256 of the batch payload they answer,
so they bind to one batch's content, not just to its id.

These models are the centre's side (receiver, centre tools), the reference validators and the
source of the JSON Schemas under ``docs/schemas``. The agent's process does not import pydantic:
it decodes and encodes the messages it handles with :mod:`sync.wire_msgs` (msgspec, the same
documents, tests check both agree) and writes batches with :mod:`sync.wire_batch`. The framing,
topics and limits are in :mod:`sync.wire_base`, re-exported here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from kernel.readings import ClockQuality, Priority, Quality, Reading
from sync.wire_base import (
    CODEC_JSON,
    CODEC_ZLIB_JSON,
    FRAME_MAGIC,
    FRAME_VERSION,
    ID_PATTERN,
    KIND_PATTERN,
    MAX_INT_VALUE,
    MAX_SEQ,
    SCHEMA_VERSION,
    SHA256_PATTERN,
    SIGNATURE_LEN,
    SITE_PATTERN,
    STATUS_SCHEMA_VERSION,
    ZLIB_LEVEL,
    Frame,
    Topics,
    WireError,
    compress,
    content_hash,
    pack_frame,
    peek_batch_ids,
    shared_batch_subscription,
    site_of_topic,
    unpack_frame,
)
from sync.wire_batch import (
    VT_BOOL,
    VT_FLOAT,
    VT_INT,
    VT_NULL,
    VT_STR,
    StoredRow,
    batch_json,
    batch_json_chunks,
    batch_json_rows,
)

__all__ = [
    "CODEC_JSON",
    "CODEC_ZLIB_JSON",
    "FRAME_MAGIC",
    "FRAME_VERSION",
    "ID_PATTERN",
    "KIND_PATTERN",
    "MAX_INT_VALUE",
    "MAX_SEQ",
    "SCHEMA_VERSION",
    "SHA256_PATTERN",
    "SIGNATURE_LEN",
    "SITE_PATTERN",
    "STATUS_SCHEMA_VERSION",
    "VT_BOOL",
    "VT_FLOAT",
    "VT_INT",
    "VT_NULL",
    "VT_STR",
    "WIRE_MODELS",
    "ZLIB_LEVEL",
    "Ack",
    "Batch",
    "BufferStats",
    "Command",
    "CommandReply",
    "Frame",
    "Rejection",
    "Status",
    "StoredRow",
    "Topics",
    "WireError",
    "WireModel",
    "WireReading",
    "batch_json",
    "batch_json_chunks",
    "batch_json_rows",
    "compress",
    "content_hash",
    "decode_batch",
    "decode_command",
    "decode_down",
    "decode_status",
    "encode_batch_payload",
    "encode_command_payload",
    "encode_small",
    "pack_frame",
    "peek_batch_ids",
    "shared_batch_subscription",
    "site_of_topic",
    "unpack_frame",
    "wire_json_schemas",
]


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
    kind: str = Field(pattern=KIND_PATTERN, description="Same as the topic's last segment.")
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


def encode_batch_payload(batch: Batch, level: int = ZLIB_LEVEL) -> bytes:
    """The compressed payload of a batch (what gets signed)."""
    return compress(batch.model_dump_json().encode(), level)


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
