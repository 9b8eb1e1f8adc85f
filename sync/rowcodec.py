"""A poll's readings as one stored row: each reading's wire-JSON text, encoded once at store time.

A stored row holds consecutive sequence numbers ``seq_first..seq_last`` of one priority class and
its readings as the comma-joined ``readings`` items of a schema v2 batch (the same text
:func:`sync.wire_batch.batch_json_rows` writes), so a batch is the concatenation of its rows. The text is
stored zlib-compressed (:func:`pack`).

Splitting a row's text back into readings is exact: inside a JSON string a quote is always
escaped, so ``,{"seq":`` only ever occurs where one reading's object ends and the next begins.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterator, Sequence

from kernel.readings import ClockQuality, Priority, Quality, Reading
from sync.wire_batch import VT_BOOL, VT_FLOAT, VT_INT, VT_NULL, VT_STR, StoredRow

ROW_MAX = 64
"""Most readings in one stored row (a poll of a device rarely has more points)."""

Chunk = tuple[int, int, int, str]
"""A stored row, or a part of one: ``(seq_first, seq_last, priority, readings' JSON text)``."""

NewRow = tuple[int, int, int, float, int, bytes]
"""A row to insert: ``(seq_first, seq_last, priority, ts of its first reading, count, packed text)``."""

_SEP = ',{"seq":'
_json_str = json.JSONEncoder(ensure_ascii=False).encode
_float_repr = float.__repr__
_INF_NAN = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}
_PRIORITIES = tuple(Priority)
_QUALITIES = tuple(Quality)
_CLOCKS = tuple(ClockQuality)
NUL, REPLACEMENT = "\x00", "\ufffd"
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""Characters no batch may carry: NUL (PostgreSQL TEXT and JSONB refuse it, and so does the wire) and
lone surrogates (not UTF-8: what bytes decoded with ``surrogateescape`` leave behind). One such
reading would have its whole batch set aside at the centre (or fail its store), so each is stored as
U+FFFD, the Unicode replacement character, and counted."""


def pack(text: str) -> bytes:
    """A row's text as stored: zlib at its fastest level (a poll's readings repeat their names, so a
    row of 50 fits in one SQLite page instead of two overflow pages, and the byte cap holds more)."""
    return zlib.compress(text.encode(), 1)


def unpack(blob: bytes) -> str:
    """A row's text from its stored form."""
    return zlib.decompress(blob).decode()


def _number(value: float) -> str:
    text = _float_repr(value)
    return _INF_NAN.get(text, text)


def _value_json(value: object) -> str:
    """A value's JSON other than a plain float or str (the encoder writes those itself); a NaN was
    always stored as SQL NULL (SQLite has no NaN) and sent as null: kept so."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return "null" if math.isnan(value) else _number(float(value))
    return _json_str(storable(str(value)))


def storable(text: str) -> str:
    """``text`` with every character of :data:`UNSTORABLE` replaced by U+FFFD."""
    return UNSTORABLE.sub(REPLACEMENT, text)


def _text_json(text: str, where: tuple[str, str], repaired: list[tuple[str, str]] | None) -> str:
    """A text as a JSON string, an unstorable character in it replaced (:data:`UNSTORABLE`) and
    noted in ``repaired``."""
    # A NUL is found by one memchr; only a non-ASCII text (a flag Python keeps) can hold a surrogate.
    if NUL in text or (not text.isascii() and UNSTORABLE.search(text)):
        text = storable(text)
        if repaired is not None:
            repaired.append(where)
    return _json_str(text)


def _meta_json(meta: dict[str, str], where: tuple[str, str], repaired: list[tuple[str, str]] | None) -> str:
    if any(UNSTORABLE.search(k) or UNSTORABLE.search(v) for k, v in meta.items()):
        meta = {storable(k): storable(v) for k, v in meta.items()}
        if repaired is not None:
            repaired.append(where)
    return json.dumps(meta, separators=(",", ":"), ensure_ascii=False)


HEADS_MAX = 100_000
"""Most (device, point) heads a :class:`TailEncoder` keeps (about 100 bytes each); past it, it starts over."""


class TailEncoder:
    """Encodes readings' wire JSON after their seq (``,"device":...}``): the costly part of storing
    them, done before a seq is assigned.

    The text around the timestamp and value repeats from poll to poll, so each (device, point)'s
    head is made once and kept (at most :data:`HEADS_MAX`, then the cache starts over), and the unit,
    quality, class and clock text once per run of readings sharing them. A NUL or lone surrogate in
    any text is stored as U+FFFD (:data:`UNSTORABLE`); each time, the reading's (device, point) is
    appended to ``repaired`` when given.
    """

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str], str] = {}
        self._repaired_heads: set[tuple[str, str]] = set()

    def _head(self, key: tuple[str, str]) -> str:
        if len(self._heads) >= HEADS_MAX:
            self._heads.clear()
            self._repaired_heads.clear()
        noted: list[tuple[str, str]] = []
        head = self._heads[key] = (
            f',"device":{_text_json(key[0], key, noted)},"point":{_text_json(key[1], key, noted)},"ts":'
        )
        if noted:
            self._repaired_heads.add(key)
        return head

    def encode(self, readings: Sequence[Reading], repaired: list[tuple[str, str]] | None = None) -> list[str]:
        """Every reading's wire JSON after its seq, in order."""
        heads, repaired_heads = self._heads, self._repaired_heads
        out: list[str] = []
        append = out.append
        l_unit: object = None
        l_quality: object = None
        l_priority: object = None
        l_clock: object = None
        mid = ""
        last_ts: object = None
        ts_text = ""
        for r in readings:
            key = (r.device, r.point)
            head = heads.get(key)
            if head is None:
                head = self._head(key)
            if repaired_heads and repaired is not None and key in repaired_heads:
                repaired.append(key)
            # Consecutive readings nearly always share these (the same objects): compare identities.
            unit, quality, priority, clock = r.unit, r.quality, r.priority, r.clock
            if unit is not l_unit or quality is not l_quality or priority is not l_priority or clock is not l_clock:
                l_unit, l_quality, l_priority, l_clock = unit, quality, priority, clock
                mid = (
                    f',"unit":{_text_json(unit, key, repaired)},"quality":{int(quality)},'
                    f'"priority":{int(priority)},"clock":{int(clock)},"meta":'
                )
            ts = r.ts
            if ts is not last_ts:  # a poll's readings share one timestamp object
                last_ts, ts_text = ts, _number(float(ts))
            value = r.value
            if type(value) is float:
                text = "null" if value != value else _number(value)
            elif type(value) is str:
                text = _text_json(value, key, repaired)
            else:
                text = _value_json(value)
            meta = _meta_json(r.meta, key, repaired) if r.meta else "null"
            append(f'{head}{ts_text},"value":{text}{mid}{meta}}}')
        return out


def encode_tails(readings: Sequence[Reading], repaired: list[tuple[str, str]] | None = None) -> list[str]:
    """:meth:`TailEncoder.encode` with a fresh encoder (no heads kept between calls)."""
    return TailEncoder().encode(readings, repaired)


def group(readings: Sequence[Reading]) -> list[int]:
    """Where rows start: a new row at each change of priority, and every ``ROW_MAX`` readings.

    The writer commits whole polls in order, so a poll of up to ``ROW_MAX`` points mostly lands in
    one row; the device is not a boundary, or sources that emit one reading at a time, interleaved,
    would make one row per reading again.
    """
    starts: list[int] = []
    prio = -1
    n = 0
    for i, r in enumerate(readings):
        if r.priority != prio or n == ROW_MAX:
            starts.append(i)
            prio, n = r.priority, 0
        n += 1
    return starts


def build_rows(first_seq: int, readings: Sequence[Reading], tails: Sequence[str]) -> list[NewRow]:
    """Rows for ``readings`` numbered from ``first_seq``, their texts from :func:`encode_tails`."""
    rows: list[NewRow] = []
    starts = group(readings)
    ends = [*starts[1:], len(readings)]
    for start, end in zip(starts, ends, strict=True):
        a = first_seq + start
        text = ",".join([f'{{"seq":{a + k}{tails[start + k]}' for k in range(end - start)])
        r = readings[start]
        rows.append((a, first_seq + end - 1, int(r.priority), float(r.ts), end - start, pack(text)))
    return rows


def split(text: str) -> list[str]:
    """A row's text as one JSON object per reading."""
    parts = text.split(_SEP)
    return [parts[0], *("{" + '"seq":' + p for p in parts[1:])]


def clip(chunk: Chunk, lo: int, hi: int) -> Chunk:
    """The part of a row with seqs in ``lo..hi`` (within the row's range)."""
    a, b, prio, text = chunk
    if lo <= a and hi >= b:
        return chunk
    lo, hi = max(lo, a), min(hi, b)
    return lo, hi, prio, ",".join(split(text)[lo - a : hi - a + 1])


def count(chunks: Sequence[Chunk]) -> int:
    """Readings in these chunks."""
    return sum(b - a + 1 for a, b, _, _ in chunks)


def seqs_of(chunks: Sequence[Chunk]) -> list[int]:
    """Every seq in these chunks, in order."""
    return [s for a, b, _, _ in chunks for s in range(a, b + 1)]


def cut(chunks: Sequence[Chunk], keep: int) -> list[Chunk]:
    """The first ``keep`` readings of these chunks (the last one split if need be)."""
    out: list[Chunk] = []
    for chunk in chunks:
        if keep <= 0:
            break
        a, b = chunk[0], chunk[1]
        if b - a + 1 > keep:
            chunk = clip(chunk, a, a + keep - 1)
        out.append(chunk)
        keep -= chunk[1] - chunk[0] + 1
    return out


def decode(fragment: str) -> tuple[int, Reading]:
    """One reading's JSON back to its seq and :class:`Reading`."""
    d = json.loads(fragment)
    return d["seq"], Reading(
        d["device"],
        d["point"],
        d["value"],
        d["ts"],
        d["unit"],
        _QUALITIES[d["quality"]],
        _PRIORITIES[d["priority"]],
        _CLOCKS[d["clock"]],
        d["meta"],
    )


def decode_text(text: str) -> Iterator[tuple[int, Reading]]:
    """Every reading of a row, oldest first."""
    for fragment in split(text):
        yield decode(fragment)


def stored_row(fragment: str) -> StoredRow:
    """One reading's JSON as a ``sync.wire_batch.StoredRow`` (the per-reading row the store used to keep)."""
    seq, r = decode(fragment)
    v = r.value
    vtype = (
        VT_NULL if v is None else VT_BOOL if isinstance(v, bool) else VT_INT if isinstance(v, int)
        else VT_FLOAT if isinstance(v, float) else VT_STR
    )  # fmt: skip
    meta = json.dumps(r.meta, separators=(",", ":"), ensure_ascii=False) if r.meta else None
    return (seq, int(r.priority), r.ts, r.device, r.point, v, vtype, r.unit, int(r.quality), int(r.clock), meta)


def row_ts(text: str) -> float:
    """The timestamp of a row's first reading."""
    return float(json.loads(split(text)[0])["ts"])
