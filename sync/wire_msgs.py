"""The wire messages the agent's process decodes and encodes, as msgspec structs (no pydantic).

:mod:`sync.wire` keeps the pydantic models: the centre's side, the reference validators and the
source of the JSON Schemas under ``docs/schemas``. The structs here carry the same fields, in the
same order, with the same defaults, types, bounds and patterns, and are stricter where the two
libraries differ: no coercion of ``"1"``, ``1.0`` or ``true`` to a number, no ``NaN`` or
``Infinity`` tokens and no number past a double's range in what the agent decodes, patterns
anchored at the very end (``\\Z``, as pydantic's Rust ``$``), and a command body nested no deeper
than pydantic's parser allows. Whatever pydantic refuses is refused here too, with one
:class:`~sync.wire_base.WireError` line (``tests/sync/test_wire_msgs.py`` checks both on generated
documents).

What the agent encodes (its status and command replies) is written byte for byte as pydantic's
``model_dump_json`` writes it: the signature covers those bytes and the centre reads them with
the pydantic models.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar, Union

import msgspec
from msgspec import Meta

from sync.wire_base import ID_PATTERN, KIND_PATTERN, SHA256_PATTERN, SITE_PATTERN, Frame, WireError, anchored

MAX_BODY_DEPTH = 200
"""Containers a value of a command may sit in, counting the command itself: pydantic's JSON parser
refuses a document nested deeper (its recursion limit), so this decoder does too."""


SiteId = Annotated[str, Meta(pattern=anchored(SITE_PATTERN))]
MsgId = Annotated[str, Meta(pattern=anchored(ID_PATTERN))]
Sha256 = Annotated[str, Meta(pattern=anchored(SHA256_PATTERN))]
CommandKind = Annotated[str, Meta(pattern=anchored(KIND_PATTERN))]
Count = Annotated[int, Meta(ge=0)]
Seq = Annotated[int, Meta(ge=1)]  # as sync.wire.Ack: no upper bound (a batch's own seqs are bounded)


class WireStruct(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of the agent's wire messages: unknown fields are refused, fields are given by name.
    (Each message repeats ``kw_only`` and ``frozen`` for mypy; msgspec inherits them anyway.)"""


class BufferStats(WireStruct, kw_only=True, frozen=True):
    """The site buffer as seen when a batch or a status was made (:class:`sync.wire.BufferStats`)."""

    depth: Count
    bytes: Count
    oldest_ts: Union[float, None] = None
    dropped: dict[str, int] = {}
    rejected: Count = 0


class Ack(WireStruct, kw_only=True, frozen=True, tag_field="type", tag="ack"):
    """The centre has persisted a batch (:class:`sync.wire.Ack`)."""

    type: ClassVar[str] = "ack"
    schema_version: Literal[2] = 2
    site_id: SiteId
    batch_id: MsgId
    first_seq: Seq
    last_seq: Seq
    batch_sha256: Sha256
    stored: Count
    duplicates: Count
    receiver: str = ""


AnsweredReason = Literal["malformed", "site-mismatch", "schema-version", "unstorable"]


class Rejection(WireStruct, kw_only=True, frozen=True, tag_field="type", tag="reject"):
    """The centre refused a batch signed by the site (:class:`sync.wire.Rejection`)."""

    type: ClassVar[str] = "reject"
    schema_version: Literal[2] = 2
    site_id: SiteId
    batch_id: MsgId
    batch_sha256: Sha256
    first_seq: Union[int, None] = None
    last_seq: Union[int, None] = None
    reason: AnsweredReason
    detail: str = ""
    receiver: str = ""


class Command(WireStruct, kw_only=True, frozen=True):
    """A signed command from the centre (:class:`sync.wire.Command`)."""

    type: Literal["command"] = "command"
    schema_version: Literal[2] = 2
    command_id: MsgId
    target: SiteId
    kind: CommandKind
    issued_at: float
    expires_at: float
    body: dict[str, Any] = {}


class CommandReply(WireStruct, kw_only=True, frozen=True):
    """The site's answer to a command (:class:`sync.wire.CommandReply`)."""

    type: Literal["cmd-reply"] = "cmd-reply"
    schema_version: Literal[2] = 2
    site_id: SiteId
    command_id: str
    outcome: Literal["accepted", "refused", "failed"]
    reason: str = ""
    ts: float
    phase: Literal["", "staged", "committed", "rolled-back", "aborted"] = ""
    version: Union[int, None] = None


class Status(WireStruct, kw_only=True, frozen=True):
    """The site's retained status, also its last will (:class:`sync.wire.Status`)."""

    type: Literal["status"] = "status"
    schema_version: Literal[3] = 3
    site_id: SiteId
    state: Literal["online", "offline"]
    ts: Union[float, None] = None
    connected_at: Union[float, None] = None
    buffer: Union[BufferStats, None] = None
    in_flight: int = 0
    rejected_batches: int = 0
    last_rejection: Union[str, None] = None
    agent_version: str = ""
    config_version: Union[int, None] = None
    update_state: str = ""
    release: Union[str, None] = None
    healthy: Union[bool, None] = None
    readings_per_s: Union[float, None] = None


S = TypeVar("S", bound=WireStruct)


def build(cls: type[S], **fields: Any) -> S:
    """A message checked as a decoded one is (types, bounds, patterns; an int where a float goes
    becomes a float, as pydantic made it); a bad field raises :class:`WireError` naming it."""
    try:
        return msgspec.convert(fields, cls)
    except msgspec.ValidationError as exc:
        raise WireError(f"not a valid {cls.__name__}: {exc}") from exc


_DOWN = msgspec.json.Decoder(Union[Ack, Rejection])
_COMMAND = msgspec.json.Decoder(Command)


def decode_down(data: bytes) -> Ack | Rejection:
    """Parse the JSON of a message from ``down/ack`` (inside its verified frame)."""
    try:
        return _DOWN.decode(data)
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:
        raise WireError(f"not an ack or rejection: {_one_line(exc)}") from exc


def decode_command(frame: Frame) -> Command:
    """Validate the JSON inside a (verified) frame as a :class:`Command`."""
    try:
        cmd = _COMMAND.decode(frame.json_bytes())
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:
        raise WireError(f"not a valid command: {_one_line(exc)}") from exc
    if cmd.body and _deeper_than(cmd.body, MAX_BODY_DEPTH - 1):
        raise WireError(f"not a valid command: body nested deeper than {MAX_BODY_DEPTH} levels")
    return cmd


def _deeper_than(value: dict[str, Any] | list[Any], levels: int) -> bool:
    """Whether a non-empty container holds values more than ``levels`` further containers deep
    (an empty one holds nothing, as pydantic's parser counts)."""
    if levels <= 0:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(isinstance(c, dict | list) and c and _deeper_than(c, levels - 1) for c in children)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deep"
    text = str(exc).splitlines()
    return text[0][:200] if text else type(exc).__name__


class PydanticMessage(Protocol):
    """A :mod:`sync.wire` model (the centre's side): it writes its own JSON."""

    def model_dump_json(self) -> str: ...


def encode_small(msg: WireStruct | PydanticMessage) -> bytes:
    """The plain JSON payload of a status, a command reply, an ack or a rejection (what gets signed)."""
    if isinstance(msg, WireStruct):
        try:
            return _json(msg).encode()
        except UnicodeEncodeError as exc:
            raise WireError(f"{type(msg).__name__} holds text that is not valid Unicode: {exc.reason}") from exc
    return msg.model_dump_json().encode()


_str_json = msgspec.json.encode


def _json(value: Any) -> str:
    """JSON text as pydantic-core writes it (no spaces, UTF-8 text, NaN and infinities as constants)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _str_json(value).decode()
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float_json(value)
    if isinstance(value, msgspec.Struct):
        cfg = value.__struct_config__
        parts = [f'"{cfg.tag_field}":{_json(cfg.tag)}'] if cfg.tag_field is not None else []
        parts += [f"{_str_json(name).decode()}:{_json(getattr(value, name))}" for name in value.__struct_fields__]
        return "{" + ",".join(parts) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    raise WireError(f"a {type(value).__name__} has no JSON form on the wire")


def _float_json(x: float) -> str:
    """A float as pydantic-core writes it: shortest round-trip digits, ``e+16`` and ``e-7`` in
    exponent form (msgspec writes ``e16``), NaN and infinities as the constants."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    text = _str_json(float(x)).decode()
    e = text.find("e")
    if e >= 0 and text[e + 1] != "-":
        text = f"{text[: e + 1]}+{text[e + 1 :]}"
    return text
