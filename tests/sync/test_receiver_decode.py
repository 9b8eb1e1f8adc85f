"""The receiver's msgspec decoder against the pydantic reference, on generated batches good and bad.

The fast path may only accept what pydantic accepts, with the same values; everything else must
come out exactly as pydantic says (same error text, hence the same rejection reason and detail).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sync import wire
from sync.receiver import Receiver
from sync.receiver_db import _rows, open_db
from sync.receiver_decode import FastBatch, _accept, decode_batch_fast
from sync.receiver_series import SeriesCache
from sync.signing import Signer, SiteRegistry
from sync.wire import MAX_INT_VALUE, MAX_SEQ, Ack, Rejection
from tests.sync.conftest import SITE

_names = st.one_of(
    st.sampled_from(["", "d", "meter-01", "é" * 200, "é" * 201, "x" * 50, "x" * 51, "a\n", "a\x00", "\x00"]),
    st.text(max_size=8),
)
# Integers past 64 bits (msgspec's bounds) and past a double (the centre's value column), and their edges.
_huge = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, MAX_INT_VALUE, MAX_INT_VALUE + 1, 10**400])
_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), _huge, st.just(-(10**400)),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.sampled_from(["\x00", "v\x00"]),
)  # fmt: skip
_seq_edges = st.sampled_from([MAX_SEQ, MAX_SEQ + 1, 2**64, 10**30])
_any_scalar = st.one_of(
    _values, st.just([]), st.just({}), st.just("1"), st.just(1.0), st.just(2**64), _seq_edges,
    st.just(math.inf), st.just(math.nan),
)  # fmt: skip
_metas = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["k", "k\x00", ""]), st.sampled_from(["v", "\x00", "é"]), max_size=2),
    st.just({"k": {"nested": "v"}}),
)


@st.composite
def reading(draw: st.DrawFn, seq: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"seq": seq, "device": "meter-01", "point": "v", "ts": 1.79e9 + seq, "value": 230.5}
    optional = {"unit": "V", "quality": 0, "priority": 2, "clock": 0, "meta": None}
    for key, default in optional.items():
        if draw(st.booleans()):
            doc[key] = default
    if draw(st.integers(0, 7)) == 0:
        doc["meta"] = draw(_metas)
    if draw(st.integers(0, 5)) == 0:  # now and then, one field is off
        key = draw(st.sampled_from([*doc, *optional, "extra"]))
        doc[key] = draw(st.one_of(
            _any_scalar, _names, st.integers(-2, 3), st.dictionaries(st.text(max_size=3), _any_scalar, max_size=2),
        ))  # fmt: skip
        if draw(st.booleans()):
            doc.pop(key, None)
    else:
        doc["value"] = draw(_values)
    return doc


@st.composite
def batch_doc(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    start = draw(st.one_of(st.integers(1, 5), st.sampled_from([MAX_SEQ - 2, MAX_SEQ])))
    n = draw(st.integers(1, 6))
    readings = [draw(reading(start + i)) for i in range(n)]
    doc: dict[str, Any] = {
        "type": "batch", "schema_version": 2, "site_id": SITE, "batch_id": "b-1", "first_seq": start,
        "last_seq": start + n - 1, "created_at": 0.0, "readings": readings,
        "buffer": {"depth": n, "bytes": 0, "oldest_ts": None, "dropped": {}, "rejected": 0},
    }  # fmt: skip
    for _ in range(max(0, draw(st.integers(-2, 2)))):
        key = draw(st.sampled_from([*doc, "extra"]))
        doc[key] = draw(st.one_of(
            _any_scalar, _names, st.integers(-1, 9),
            st.sampled_from(["site-a\n", "b 1", "b-2", "b-1\n", "batch", "ack", "b\x00"]),
            st.just([]), st.just({"depth": -1, "bytes": 0}), st.just({"depth": 1, "bytes": 0, "dropped": {"x": 1.5}}),
        ))  # fmt: skip
    if draw(st.integers(0, 4)) == 0:
        readings.append(dict(readings[0]))  # a seq twice
    msg_id = draw(st.sampled_from(["b-1", "b-1", "", "b-2"]))
    return doc, msg_id


def _frame(doc: dict[str, Any], msg_id: str) -> wire.Frame:
    return wire.Frame(wire.CODEC_ZLIB_JSON, b"", wire.compress(json.dumps(doc).encode()), msg_id)


def _outcome(decode: Any, frame: wire.Frame) -> tuple[str, Any]:
    try:
        batch = decode(frame)
    except wire.WireError as exc:
        return "refused", str(exc)
    return "stored", repr(_rows(batch, "rx", 0.0, SeriesCache()))


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch_doc())
def test_fast_and_reference_decoders_agree(case: tuple[dict[str, Any], str]) -> None:
    frame = _frame(*case)
    reference = _outcome(wire.decode_batch, frame)
    assert _outcome(decode_batch_fast, frame) == reference
    fast = _accept(frame) is not None
    if fast:  # msgspec alone took it: pydantic must take it, with the same rows
        assert reference[0] == "stored"
    event(f"{reference[0]}, {'fast' if fast else 'by pydantic'}")


def test_a_batch_as_the_agent_writes_it_takes_the_fast_path() -> None:
    from kernel.readings import Priority, Reading

    rs = [
        (1, Reading("meter-1", "v", 230.1, 1.79e9, unit="V")),
        (2, Reading("meter-1", "n", 7, 1.79e9)),
        (3, Reading("meter-1", "ok", True, 1.79e9)),
        (4, Reading("meter-1", "availability", "offline", 1.79e9, priority=Priority.EVENT, meta={"where": "ü"})),
        (5, Reading("meter-1", "none", None, 1.79e9)),
    ]
    doc = wire.batch_json(SITE, "b-1", 0.0, rs, wire.BufferStats(depth=5, bytes=0))
    frame = wire.Frame(wire.CODEC_ZLIB_JSON, b"", wire.compress(doc), "b-1")
    fast = _accept(frame)
    assert isinstance(fast, FastBatch)
    assert repr(_rows(fast, "rx", 0.0, SeriesCache())) == repr(_rows(wire.decode_batch(frame), "rx", 0.0, SeriesCache()))


_DOC = (
    '{"site_id":"%s","batch_id":"b-1","first_seq":2,"last_seq":2,"created_at":0.0,'
    '"readings":[{"seq":2,"device":"d","point":"p","ts":1.0,"value":1.5}],"buffer":{"depth":1,"bytes":0}}'
)


@pytest.mark.parametrize(
    ("good", "bad", "why"),
    [
        ('"value":1.5', '"value":NaN', "NaN is JSON only to pydantic"),
        ('"seq":2,', '"seq":2.0,', "an integral float for an int"),
        ('"ts":1.0', '"ts":"1.0"', "a numeric string for a float, which pydantic coerces"),
        (f'"site_id":"{SITE}"', f'"site_id":"{SITE}\\n"', "a newline that Python's $ lets through"),
        ('"device":"d"', '"device":"d\\u0000"', "a NUL, which no database text holds"),
        ('"point":"p"', '"point":"p\\\\u0000"', "an escaped backslash before u0000: harmless, still pydantic's call"),
        ('"value":1.5', f'"value":{2**64}', "an integer past msgspec's 64-bit bounds"),
        ('"value":1.5', f'"value":{10**400}', "an integer past a double"),
    ],
)
def test_what_msgspec_refuses_pydantic_decides(good: str, bad: str, why: str) -> None:
    doc = _DOC % SITE
    assert good in doc
    assert _accept(wire.Frame(wire.CODEC_JSON, b"", doc.encode(), "b-1")) is not None
    frame = wire.Frame(wire.CODEC_JSON, b"", doc.replace(good, bad, 1).encode(), "b-1")
    assert _accept(frame) is None, why
    assert _outcome(decode_batch_fast, frame) == _outcome(wire.decode_batch, frame)


@pytest.fixture
def rx_db(site_keys, db_url):
    db = open_db(db_url)
    yield Receiver(db, SiteRegistry.load(site_keys.registry), Signer.from_file(site_keys.centre_key), name="fz")
    db.close()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(batch_doc().map(lambda c: (json.dumps(c[0]).encode(), c[1])),
                 st.tuples(st.binary(max_size=300), st.sampled_from(["b-1", ""]))))  # fmt: skip
def test_anything_the_site_signs_is_stored_or_answered_never_a_crash(rx_db, site_keys, case) -> None:
    payload, msg_id = case
    frame = Signer.from_file(site_keys.key).frame(wire.compress(payload), msg_id)
    answer = rx_db.handle(f"kbe/{SITE}/up/batch", frame)
    assert answer is None or isinstance(answer, Ack | Rejection)
    if isinstance(answer, Rejection):  # the schema refuses what the database cannot hold: never "unstorable"
        assert answer.reason in ("malformed", "schema-version", "site-mismatch")
    assert rx_db.counters["errors"] == 0


def test_a_batch_id_with_a_final_newline_is_rejected_not_a_crash(rx_db, site_keys) -> None:
    # Found by the test above: Python's ``$`` took "0\n" as a batch id for the rejection, pydantic's did not.
    reading = {"seq": 1, "device": "meter-01", "point": "v", "ts": 1790000001.0, "value": None, "meta": None}
    doc = {
        "type": "batch", "schema_version": 2, "site_id": SITE, "batch_id": "0\n", "first_seq": 1, "last_seq": 1,
        "created_at": 0.0, "readings": [reading, dict(reading)],
        "buffer": {"depth": 1, "bytes": 0, "oldest_ts": None, "dropped": {}, "rejected": 0},
    }  # fmt: skip
    frame = Signer.from_file(site_keys.key).frame(wire.compress(json.dumps(doc).encode()), "b-1")
    answer = rx_db.handle(f"kbe/{SITE}/up/batch", frame)
    assert isinstance(answer, Rejection)
    assert (answer.reason, answer.batch_id) == ("malformed", "b-1")  # the frame's id: the body's is not one
    assert rx_db.counters["errors"] == 0
