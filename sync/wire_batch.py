"""A batch's JSON document, written straight from stored readings or rows (the uplink's hot path).

The documents are those :class:`sync.wire.Batch` serialises to (hypothesis tests check they decode
alike), made without a schema object per reading and without a schema library in the process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from kernel.readings import Reading
from sync.wire_base import SCHEMA_VERSION


class BufferFields(Protocol):
    """What a batch reports of the site buffer: :class:`sync.wire_msgs.BufferStats` (the agent's)
    or :class:`sync.wire.BufferStats` (the centre's reference model)."""

    @property
    def depth(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def oldest_ts(self) -> float | None: ...
    @property
    def dropped(self) -> Mapping[str, int]: ...
    @property
    def rejected(self) -> int: ...


def buffer_dict(buffer: BufferFields) -> dict[str, Any]:
    """The buffer's fields in wire order (what ``BufferStats.model_dump()`` gave)."""
    return {
        "depth": buffer.depth,
        "bytes": buffer.bytes,
        "oldest_ts": buffer.oldest_ts,
        "dropped": dict(buffer.dropped),
        "rejected": buffer.rejected,
    }


def batch_json(
    site_id: str,
    batch_id: str,
    created_at: float,
    readings: Sequence[tuple[int, Reading]],
    buffer: BufferFields,
) -> bytes:
    """The JSON document of a batch, built straight from stored readings (seq, reading), oldest first.

    The agent's hot path: the same document :class:`sync.wire.Batch` serialises to (a hypothesis test checks
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
        "buffer": buffer_dict(buffer),
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
    buffer: BufferFields,
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
    site_id: str, batch_id: str, created_at: float, first: int, last: int, readings: str, buffer: BufferFields
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
    tail = json.dumps(buffer_dict(buffer), ensure_ascii=False, separators=(",", ":"))
    return f'{head[:-1]},"readings":[{readings}],"buffer":{tail}}}'.encode()


def batch_json_chunks(
    site_id: str,
    batch_id: str,
    created_at: float,
    chunks: Sequence[tuple[int, int, int, str]],
    buffer: BufferFields,
) -> bytes:
    """The JSON document of a batch from stored rows that already hold their readings' JSON
    (``(seq_first, seq_last, priority, text)``, oldest first; :mod:`sync.rowcodec`): a concatenation.

    The same document :func:`batch_json_rows` writes for those readings (a test checks it byte for byte).
    """
    body = ",".join([c[3] for c in chunks])
    return _batch_document(site_id, batch_id, created_at, chunks[0][0], chunks[-1][1], body, buffer)
