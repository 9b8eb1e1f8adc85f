"""Wire schema: round trips (hypothesis), framing errors, topics, and the committed JSON Schemas."""

from __future__ import annotations

import dataclasses
import math
import zlib
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.schemas import stale_files
from kernel.readings import ClockQuality, Priority, Quality, Reading
from sync import wire
from sync.signing import Signer, open_down
from sync.wire import (
    Ack,
    Batch,
    BufferStats,
    Command,
    CommandReply,
    Rejection,
    Status,
    Topics,
    WireError,
    WireReading,
)

REPO = Path(__file__).resolve().parents[2]

# Storable text: no NUL (test_unstorable_values_are_refused_by_name covers it).
chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
names = st.text(chars, min_size=1, max_size=30)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(chars, max_size=40),
)
readings = st.builds(
    Reading,
    device=names,
    point=names,
    value=values,
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    unit=st.text(chars, max_size=10),
    quality=st.sampled_from(Quality),
    priority=st.sampled_from(Priority),
    clock=st.sampled_from(ClockQuality),
    meta=st.one_of(st.none(), st.dictionaries(st.text(chars, max_size=8), st.text(chars, max_size=20), max_size=3)),
)


def _is_nan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def same_value(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(st.lists(readings, min_size=1, max_size=40), st.integers(min_value=1, max_value=2**40))
def test_batch_round_trip_through_a_frame(rs: list[Reading], first: int) -> None:
    wrs = [WireReading.from_reading(first + i, r) for i, r in enumerate(rs)]
    batch = Batch(
        site_id="site-1",
        batch_id="b1",
        first_seq=first,
        last_seq=first + len(rs) - 1,
        created_at=1.5,
        readings=wrs,
        buffer=BufferStats(depth=len(rs), bytes=10, dropped={"TELEMETRY": 3}),
    )
    frame = wire.unpack_frame(wire.pack_frame(wire.encode_batch_payload(batch), b"\x01" * 64))
    back = wire.decode_batch(frame)
    assert back.seqs() == batch.seqs()
    for orig, got in zip(rs, back.readings, strict=True):
        r = got.to_reading()
        assert same_value(orig.value, r.value)
        assert (r.device, r.point, r.ts, r.unit, r.quality, r.priority, r.clock, r.meta) == (
            orig.device, orig.point, orig.ts, orig.unit, orig.quality, orig.priority, orig.clock, orig.meta
        )


@settings(max_examples=60, deadline=None)
@given(st.lists(readings, min_size=1, max_size=30), st.integers(min_value=1, max_value=2**40))
def test_fast_batch_json_decodes_like_the_model(rs: list[Reading], first: int) -> None:
    stats = BufferStats(depth=len(rs), bytes=10, oldest_ts=1.0, dropped={"TELEMETRY": 2}, rejected=1)
    fast = wire.batch_json("site-1", "b1", 2.5, [(first + i, r) for i, r in enumerate(rs)], stats)
    model = Batch(site_id="site-1", batch_id="b1", first_seq=first, last_seq=first + len(rs) - 1, created_at=2.5,
                  readings=[WireReading.from_reading(first + i, r) for i, r in enumerate(rs)], buffer=stats)
    a = wire.decode_batch(wire.unpack_frame(wire.pack_frame(wire.compress(fast), msg_id="b1")))
    b = wire.decode_batch(wire.unpack_frame(wire.pack_frame(wire.encode_batch_payload(model), msg_id="b1")))
    assert a.model_dump_json() == b.model_dump_json()


@settings(max_examples=40, deadline=None)
@given(st.lists(readings, min_size=1, max_size=30))
def test_batch_from_stored_rows_decodes_like_the_batch_from_readings(rs: list[Reading]) -> None:
    """The uplink's row encoder (store rows straight to JSON) says what the reading encoder says."""
    import tempfile

    from sync.store import Store

    stats = BufferStats(depth=len(rs), bytes=10, oldest_ts=None, dropped={}, rejected=0)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.db", "site-1") as store:
        seqs = store.append(rs)
        rows = sorted(row for prio in Priority for row in store.pending_rows(100, 0, prio))
    assert [r[0] for r in rows] == seqs
    fast = wire.batch_json_rows("site-1", "b1", 2.5, rows, stats)
    # The store keeps an empty meta as none and a NaN value as null (SQLite has no NaN), as it always
    # has: the old uplink path sent null for both too.
    as_stored = [
        dataclasses.replace(r, meta=r.meta or None, value=None if _is_nan(r.value) else r.value) for r in rs
    ]
    slow = wire.batch_json("site-1", "b1", 2.5, list(zip(seqs, as_stored, strict=True)), stats)
    a = wire.decode_batch(wire.unpack_frame(wire.pack_frame(wire.compress(fast), msg_id="b1")))
    b = wire.decode_batch(wire.unpack_frame(wire.pack_frame(wire.compress(slow), msg_id="b1")))
    assert a.model_dump_json() == b.model_dump_json()
    assert [type(x.value) for x in a.readings] == [type(x.value) for x in b.readings]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_frames_raise_wire_error_only(data: bytes) -> None:
    try:
        frame = wire.unpack_frame(data)
        wire.decode_batch(frame)
    except WireError:
        pass


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_payload_in_a_valid_header(data: bytes) -> None:
    frame = wire.unpack_frame(wire.pack_frame(zlib.compress(data) + b"", b""))
    with pytest.raises(WireError):
        wire.decode_batch(frame)
    assert wire.peek_batch_ids(frame)[0] is None or isinstance(wire.peek_batch_ids(frame)[0], str)


def test_frame_header_errors_are_named() -> None:
    with pytest.raises(WireError, match="magic"):
        wire.unpack_frame(b"XX\x01\x01\x00\x00payload")
    with pytest.raises(WireError, match="version 9"):
        wire.unpack_frame(b"KB\x09\x01\x00\x00payload")
    with pytest.raises(WireError, match="signature length"):
        wire.unpack_frame(b"KB\x01\x01\x05\x00payload")
    with pytest.raises(WireError, match="shorter"):
        wire.unpack_frame(b"KB")


def test_decompression_bomb_is_refused() -> None:
    bomb = zlib.compress(b"0" * (65 * 1024 * 1024), 9)
    with pytest.raises(WireError, match="64 MiB"):
        wire.unpack_frame(wire.pack_frame(bomb)).json_bytes()


def test_inconsistent_seq_range_is_refused() -> None:
    r = WireReading(seq=5, device="d", point="p", ts=1.0, value=1)
    batch = Batch(site_id="s", batch_id="b", first_seq=4, last_seq=5, created_at=0, readings=[r],
                  buffer=BufferStats(depth=1, bytes=0))
    with pytest.raises(WireError, match="first_seq"):
        wire.decode_batch(wire.unpack_frame(wire.pack_frame(wire.encode_batch_payload(batch))))


_GOOD = '{"seq":1,"device":"d","point":"p","ts":1.0,"value":1,"unit":"V","meta":{"k":"v"}}'


@pytest.mark.parametrize(
    ("good", "bad", "where", "why"),
    [
        ('"seq":1,', f'"seq":{2**63},', "readings.0.seq", "less than or equal to 9223372036854775807"),
        ('"first_seq":1', f'"first_seq":{2**63}', "first_seq", "less than or equal to 9223372036854775807"),
        ('"device":"d"', '"device":"d\\u0000"', "readings.0.device", "NUL"),
        ('"point":"p"', '"point":"\\u0000"', "readings.0.point", "NUL"),
        ('"unit":"V"', '"unit":"V\\u0000"', "readings.0.unit", "NUL"),
        ('"value":1,', '"value":"a\\u0000b",', "readings.0.value", "NUL"),
        ('{"k":"v"}', '{"k":"\\u0000"}', "readings.0.meta.k", "NUL"),
        ('{"k":"v"}', '{"k\\u0000":"v"}', "readings.0.meta", "NUL"),
        ('"value":1,', f'"value":{10**400},', "readings.0.value", "does not fit a double"),
        ('"value":1,', f'"value":-{10**400},', "readings.0.value", "does not fit a double"),
        ('"ts":1.0', '"ts":NaN', "readings.0.ts", "finite"),
        ('"ts":1.0', '"ts":-Infinity', "readings.0.ts", "finite"),
        ('"ts":1.0', '"ts":1e999', "readings.0.ts", "finite"),
    ],
)
def test_unstorable_values_are_refused_by_name(good: str, bad: str, where: str, why: str) -> None:
    """What the centre's columns cannot hold is refused by the schema, naming the field (docs/wire-protocol.md)."""
    doc = ('{"site_id":"s","batch_id":"b","first_seq":1,"last_seq":1,"created_at":0.0,"readings":[%s],'
           '"buffer":{"depth":1,"bytes":0}}')  # fmt: skip
    ok = wire.Frame(wire.CODEC_JSON, b"", (doc % _GOOD).encode())
    assert wire.decode_batch(ok).readings[0].value == 1
    text = doc % _GOOD
    assert good in text
    frame = wire.Frame(wire.CODEC_JSON, b"", text.replace(good, bad, 1).encode())
    with pytest.raises(WireError, match=why) as err:
        wire.decode_batch(frame)
    assert str(err.value).startswith(f"not a valid batch: {where}")


def test_the_largest_storable_values_pass() -> None:
    r = WireReading(seq=2**63 - 1, device="d", point="p", ts=1.0, value=wire.MAX_INT_VALUE, meta={"k": "v"})
    assert float(r.value) == 1.7976931348623157e308  # type: ignore[arg-type]
    assert WireReading(seq=1, device="d", point="p", ts=1.0, value=float("nan")).value != 0  # a NaN value travels


_SHA = st.from_regex(r"\A[0-9a-f]{64}\Z")
_CENTRE = Signer(Ed25519PrivateKey.generate())


@settings(max_examples=40, deadline=None)
@given(
    st.builds(Ack, site_id=st.just("s1"), batch_id=st.from_regex(r"\A[a-z0-9]{1,20}\Z"), batch_sha256=_SHA,
              first_seq=st.integers(1, 10**12), last_seq=st.integers(1, 10**12),
              stored=st.integers(0, 10**6), duplicates=st.integers(0, 10**6)),
    st.builds(Rejection, site_id=st.just("s1"), batch_id=st.just("b"), batch_sha256=_SHA,
              reason=st.sampled_from(["malformed", "site-mismatch", "schema-version", "unstorable"]),
              detail=st.text(max_size=50)),
)
def test_down_messages_round_trip_signed(ack: Ack, rej: Rejection) -> None:
    keys = [_CENTRE.public_key()]
    # The agent decodes with msgspec (sync.wire_msgs): the same fields and values as the centre's model.
    assert msgspec.to_builtins(open_down(_CENTRE.small_frame(ack, ack.batch_id), keys)) == ack.model_dump()
    assert msgspec.to_builtins(open_down(_CENTRE.small_frame(rej, rej.batch_id), keys)) == rej.model_dump()
    # The plain JSON alone (the protocol before version 2) is not a frame: never trusted.
    with pytest.raises(WireError):
        open_down(ack.model_dump_json().encode(), keys)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=10), st.booleans()),
                       max_size=5))
def test_command_and_reply_round_trip(body: dict) -> None:
    cmd = Command(command_id="c-1", target="site-1", kind="lighting", issued_at=1.0, expires_at=2.0,
                  body=body)
    frame = wire.unpack_frame(wire.pack_frame(wire.encode_command_payload(cmd), b"\x00" * 64))
    assert wire.decode_command(frame) == cmd
    reply = CommandReply(site_id="site-1", command_id="c-1", outcome="refused", reason="expired", ts=3.0)
    assert CommandReply.model_validate_json(reply.model_dump_json()) == reply
    st_ = Status(site_id="site-1", state="online", ts=1.0, buffer=BufferStats(depth=1, bytes=2))
    assert Status.model_validate_json(st_.model_dump_json()) == st_


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(WireError):
        wire.decode_down(b'{"type":"ack","site_id":"s","batch_id":"b","first_seq":1,"last_seq":1,'
                         b'"batch_sha256":"' + b"0" * 64 + b'","stored":1,"duplicates":0,"extra":1}')


def test_topic_table() -> None:
    t = Topics("kbe", "site-1")
    assert t.batch == "kbe/site-1/up/batch"
    assert t.ack == "kbe/site-1/down/ack"
    assert t.status == "kbe/site-1/status"
    assert t.command("lighting") == "kbe/site-1/down/cmd/lighting"
    assert t.cmd_reply == "kbe/site-1/up/cmd-reply"
    assert wire.shared_batch_subscription("centre") == "$share/centre/kbe/+/up/batch"
    assert wire.site_of_topic(t.batch) == "site-1"


def test_committed_schemas_are_current() -> None:
    stale = stale_files(REPO / "docs" / "schemas")
    assert not stale, f"stale: {stale}; run: edge-agent schemas --write docs/schemas"
