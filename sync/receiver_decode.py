"""The receiver's fast batch decoder: msgspec checks a batch in C; pydantic keeps the last word.

:class:`sync.wire.Batch` (pydantic) is the schema and the reference validator, but it builds a
model per reading (about 2 µs each). Here msgspec decodes the same document into plain structs
with the same field names, types, bounds and defaults, stricter where the two libraries differ
(no coercion of ``"1"`` or ``1.0`` to an int, no ``NaN`` tokens, patterns checked with
``fullmatch``, integer values within 64 bits, and any document holding ``\\u0000`` left to pydantic,
which refuses a NUL in any string). It only ever *accepts*: anything it refuses, and any batch whose ids or sequence
range look wrong, goes to :func:`sync.wire.decode_batch`, which accepts or rejects it with the
reason and detail it always gave. So a batch is refused for exactly the reasons it was before, and
a batch msgspec accepts carries the values pydantic would have produced
(``tests/sync/test_receiver_decode.py`` checks both on generated batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Protocol, Union

import msgspec
from msgspec import Meta

from sync.wire import MAX_SEQ, Frame, decode_batch
from sync.wire_base import ID_RE, SITE_RE


class ReadingFields(Protocol):
    """What the store needs of a reading: :class:`sync.wire.WireReading` or the fast struct."""

    @property
    def seq(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def point(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def value(self) -> bool | int | float | str | None: ...
    @property
    def unit(self) -> str: ...
    @property
    def quality(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def clock(self) -> int: ...
    @property
    def meta(self) -> dict[str, str] | None: ...


class BatchFields(Protocol):
    """What the store and the ack need of a batch: :class:`sync.wire.Batch` or the fast struct."""

    @property
    def site_id(self) -> str: ...
    @property
    def batch_id(self) -> str: ...
    @property
    def first_seq(self) -> int: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def readings(self) -> Sequence[ReadingFields]: ...


_Level = Literal[0, 1, 2]  # Quality, Priority and ClockQuality all take 0, 1, 2
_Name = Annotated[str, Meta(min_length=1, max_length=200)]
_Count = Annotated[int, Meta(ge=0)]
_Seq = Annotated[int, Meta(ge=1, le=MAX_SEQ)]
# Stricter than the wire's bound (a finite double): msgspec bounds stop at 64 bits; pydantic decides past them.
_Int = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]


class FastReading(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """:class:`sync.wire.WireReading` as msgspec sees it (the enums as their integer values)."""

    seq: _Seq
    device: _Name
    point: _Name
    ts: float
    value: Union[bool, _Int, float, str, None]  # msgspec keeps True, 1 and 1.0 apart, as pydantic does
    unit: Annotated[str, Meta(max_length=50)] = ""
    quality: _Level = 0
    priority: _Level = 2
    clock: _Level = 0
    meta: Union[dict[str, str], None] = None


class FastBuffer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """:class:`sync.wire.BufferStats` as msgspec sees it."""

    depth: _Count
    bytes: _Count
    oldest_ts: Union[float, None] = None
    dropped: dict[str, int] = {}
    rejected: _Count = 0


class FastBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """:class:`sync.wire.Batch` as msgspec sees it."""

    site_id: str
    batch_id: str
    first_seq: _Seq
    last_seq: _Seq
    created_at: float
    readings: Annotated[list[FastReading], Meta(min_length=1)]
    buffer: FastBuffer
    type: Literal["batch"] = "batch"
    schema_version: Literal[2] = 2


_DECODER = msgspec.json.Decoder(FastBatch)
_NUL = b"\\u0000"  # JSON can only carry NUL escaped; a raw NUL byte is invalid JSON to both decoders


def decode_batch_fast(frame: Frame) -> BatchFields:
    """The batch inside a verified frame; raises :class:`sync.wire.WireError` as ``decode_batch`` does."""
    batch = _accept(frame)
    return decode_batch(frame) if batch is None else batch


def _accept(frame: Frame) -> FastBatch | None:
    """The batch when msgspec and the consistency checks take it as it stands; None to let pydantic decide."""
    try:
        doc = frame.json_bytes()
        if _NUL in doc:  # one scan in C; a NUL anywhere (even where it would be harmless) is pydantic's call
            return None
        batch = _DECODER.decode(doc)
    except (msgspec.DecodeError, ValueError):
        return None
    if not (SITE_RE.match(batch.site_id) and ID_RE.match(batch.batch_id)):
        return None
    if frame.msg_id and frame.msg_id != batch.batch_id:
        return None
    seqs = [r.seq for r in batch.readings]
    if min(seqs) != batch.first_seq or max(seqs) != batch.last_seq or len(set(seqs)) != len(seqs):
        return None
    return batch
