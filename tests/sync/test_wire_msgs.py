"""The agent's msgspec messages (sync/wire_msgs.py) against the pydantic models (sync/wire.py).

What the agent decodes (acks, rejections, commands): on every document the centre writes, both
accept with the same values; on anything else the msgspec decoder never accepts what pydantic
refuses, and refuses only what pydantic's strict mode refuses too (the lax coercions: ``"5"`` or
``5.0`` for an int, ``true`` or ``"1.5"`` for a float) or a number that is not finite. Every
refusal is one :class:`WireError` line. What the agent encodes (status, command replies, the buffer
stats of a batch) is byte for byte what pydantic writes: the signatures cover those bytes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from sync import wire, wire_msgs
from sync.wire_base import ID_PATTERN, SITE_PATTERN, WireError
from sync.wire_batch import batch_json_chunks

REPO = Path(__file__).resolve().parents[2]

_SITE = st.from_regex(SITE_PATTERN.replace("$", r"\Z"))
_ID = st.from_regex(ID_PATTERN.replace("$", r"\Z"))
_SHA = st.from_regex(r"\A[0-9a-f]{64}\Z")
_KIND = st.from_regex(r"\A[a-z][a-z0-9_-]{0,40}\Z")
_counts = st.integers(0, 2**64)
_seqs = st.integers(1, 2**70)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), _finite, _text)
_json_values = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=20,
)

acks = st.builds(
    wire.Ack, site_id=_SITE, batch_id=_ID, first_seq=_seqs, last_seq=_seqs, batch_sha256=_SHA,
    stored=_counts, duplicates=_counts, receiver=_text,
)  # fmt: skip
rejections = st.builds(
    wire.Rejection, site_id=_SITE, batch_id=_ID, batch_sha256=_SHA,
    first_seq=st.one_of(st.none(), st.integers(-(2**70), 2**70)),
    last_seq=st.one_of(st.none(), st.integers(-(2**70), 2**70)),
    reason=st.sampled_from(["malformed", "site-mismatch", "schema-version", "unstorable"]),
    detail=_text, receiver=_text,
)  # fmt: skip
commands = st.builds(
    wire.Command, command_id=_ID, target=_SITE, kind=_KIND, issued_at=_finite, expires_at=_finite,
    body=st.dictionaries(_text, _json_values, max_size=5),
)  # fmt: skip


def _frame(doc: bytes) -> wire.Frame:
    return wire.Frame(wire.CODEC_JSON, b"", doc)


def _old(kind: str, doc: bytes, strict: bool = False) -> BaseModel | None:
    """What the pydantic reference makes of a document (None: refused)."""
    try:
        if kind == "down":
            return wire.DOWN_ADAPTER.validate_json(doc, strict=strict)
        return wire.Command.model_validate_json(doc, strict=strict)
    except ValidationError:
        return None


def _new(kind: str, doc: bytes) -> wire_msgs.WireStruct | None:
    """What the agent's msgspec decoder makes of it (None: refused with one WireError line)."""
    try:
        if kind == "down":
            return wire_msgs.decode_down(doc)
        return wire_msgs.decode_command(_frame(doc))
    except WireError as exc:
        message = str(exc)
    assert "\n" not in message
    assert message.startswith(("not an ack or rejection: ", "not a valid command: "))
    return None


def _non_finite(model: BaseModel) -> bool:
    """Whether pydantic took a NaN, an infinity or an out-of-range number (1e400) somewhere."""

    def walk(v: Any) -> bool:
        if isinstance(v, float):
            return not math.isfinite(v)
        if isinstance(v, dict):
            return any(walk(x) for x in v.values())
        if isinstance(v, list):
            return any(walk(x) for x in v)
        return False

    return walk(model.model_dump())


def _integral_float_field(doc: bytes) -> bool:
    """Whether a field holds a float with no fraction (``2.0``: even strict pydantic takes it as ``Literal[2]``)."""
    fields = json.loads(doc)
    return isinstance(fields, dict) and any(isinstance(v, float) and v.is_integer() for v in fields.values())


def _agree(kind: str, doc: bytes) -> None:
    """The property: msgspec accepts only what pydantic accepts, with the same values (same JSON
    out, byte for byte); it refuses only lax forms (strict pydantic refuses them, or an integral
    float where an integer goes) or non-finite numbers."""
    old, new = _old(kind, doc), _new(kind, doc)
    if new is not None:
        assert old is not None, f"msgspec accepted what pydantic refuses: {doc!r}"
        assert wire_msgs.encode_small(new) == old.model_dump_json().encode()
        assert type(new).__name__ == type(old).__name__
    elif old is not None:
        strict = _old(kind, doc, strict=True)
        lax = strict is None or _non_finite(old) or _integral_float_field(doc)
        assert lax, f"pydantic (strict) accepts what msgspec refuses: {doc!r}"


# --- what the centre writes: both accept, same values -------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(acks, rejections))
def test_every_ack_and_rejection_the_centre_writes_decodes_alike(msg: wire.Ack | wire.Rejection) -> None:
    doc = msg.model_dump_json().encode()
    new = wire_msgs.decode_down(doc)
    assert msgspec.to_builtins(new) == msg.model_dump()
    assert new.type == msg.type
    assert wire_msgs.encode_small(new) == doc


@settings(max_examples=300, deadline=None)
@given(commands)
def test_every_command_the_centre_writes_decodes_alike(cmd: wire.Command) -> None:
    frame = wire.unpack_frame(wire.pack_frame(wire.encode_command_payload(cmd), b"\x00" * 64))
    new = wire_msgs.decode_command(frame)
    assert wire_msgs.encode_small(new) == cmd.model_dump_json().encode()
    assert msgspec.to_builtins(new) == wire.decode_command(frame).model_dump()


# --- anything else: never accepted where pydantic refuses ---------------------------------------

_WRONG = st.one_of(
    _json_values,
    st.sampled_from(["5", "1.5", "2", "ack", "reject", "command", "site-a\n", "x" * 81, "", "NaN", "A" * 64]),
    st.sampled_from([1.0, 2.0, 0, -1, 2**63, 2**64, 10**30, True, False, None, [], {}, [1], {"a": 1}]),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(acks, rejections, commands), st.data())
def test_mutated_documents_are_never_accepted_where_pydantic_refuses(msg: BaseModel, data: st.DataObject) -> None:
    kind = "command" if isinstance(msg, wire.Command) else "down"
    doc: dict[str, Any] = json.loads(msg.model_dump_json())
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["set", "drop", "add"]))
        key = data.draw(st.sampled_from(sorted(doc))) if doc and op != "add" else data.draw(st.sampled_from(
            ["extra", "type", "schema_version", "body", "first_seq", "reason", "kind"]))  # fmt: skip
        if op == "drop":
            doc.pop(key, None)
        else:
            doc[key] = data.draw(_WRONG)
    _agree(kind, json.dumps(doc).encode())


@settings(max_examples=400, deadline=None)
@given(st.one_of(acks, rejections, commands), st.data())
def test_damaged_bytes_are_never_accepted_where_pydantic_refuses(msg: BaseModel, data: st.DataObject) -> None:
    kind = "command" if isinstance(msg, wire.Command) else "down"
    doc = bytearray(msg.model_dump_json().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(doc) - 1))
        doc[at] = data.draw(st.sampled_from(b'0123456789."\\{}[],:-+eE \x00\xff\xc3tfnaNI'))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(doc))))
    _agree(kind, bytes(doc[:cut]))


@pytest.mark.parametrize(
    "text",
    [
        b"", b" ", b"null", b"[]", b'"ack"', b"{}", b"\xff\xfe", b'{"type":"ack"', b'{"type":"ack"}}',
        b'{"type":"ack","site_id":"\\ud800"}', b'{"type":"nack"}', b"\x00",
    ],
)  # fmt: skip
def test_bad_bytes_are_refused_by_both(text: bytes) -> None:
    for kind in ("down", "command"):
        assert _old(kind, text) is None
        assert _new(kind, text) is None


_GOOD_ACK = {
    "type": "ack", "site_id": "site-a", "batch_id": "b-1", "first_seq": 1, "last_seq": 2, "batch_sha256": "a" * 64,
    "stored": 2, "duplicates": 0,
}  # fmt: skip
_GOOD_CMD = {
    "command_id": "c-1", "target": "site-a", "kind": "lighting", "issued_at": 1000.0, "expires_at": 1060.0,
}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [("first_seq", "5"), ("first_seq", 5.0), ("stored", "0"), ("schema_version", 2.0)],
)
def test_lax_forms_pydantic_coerces_are_refused(field: str, value: object) -> None:
    """Stricter than before, never looser: a number written as a string or an integral float."""
    doc = json.dumps({**_GOOD_ACK, field: value}).encode()
    assert _old("down", doc) is not None
    assert _new("down", doc) is None


@pytest.mark.parametrize("token", ['"1.5"', "true", "NaN", "Infinity", "-Infinity", "1e400"])
def test_a_command_time_must_be_a_finite_number(token: str) -> None:
    """pydantic took ``true`` as 1.0, a string as a number, and NaN or an infinity (a command that
    never expires); the agent refuses them all."""
    doc = json.dumps({**_GOOD_CMD, "expires_at": "@"}).replace('"@"', token).encode()
    assert _old("command", doc) is not None
    assert _new("command", doc) is None


@pytest.mark.parametrize("text", ["site-a\n", "SITE-A", "-site", "a" * 64])
def test_patterns_are_anchored_at_the_very_end(text: str) -> None:
    for field in ("site_id", "batch_id"):
        doc = json.dumps({**_GOOD_ACK, field: text}).encode()
        assert (_old("down", doc) is None) == (_new("down", doc) is None)
    doc = json.dumps({**_GOOD_CMD, "target": text}).encode()
    assert _old("command", doc) is None
    assert _new("command", doc) is None


def _nested(depth: int, empty_inside: bool, objects: bool) -> str:
    """JSON text of ``depth`` containers one in the other (json.dumps cannot write 50,000 levels)."""
    opening, closing, inner = ('{"k":', "}", "{}") if objects else ("[", "]", "[]")
    return opening * depth + (inner if empty_inside else "1") + closing * depth


@pytest.mark.parametrize("objects", [True, False])
@pytest.mark.parametrize("empty_inside", [True, False])
def test_deep_nesting_is_refused_at_the_same_depth(objects: bool, empty_inside: bool) -> None:
    seen = set()
    for depth in [*range(195, 205), 1000, 50_000]:
        doc = json.dumps({**_GOOD_CMD, "body": {"a": "@"}}).replace('"@"', _nested(depth, empty_inside, objects))
        old, new = _old("command", doc.encode()), _new("command", doc.encode())
        assert (old is None) == (new is None), depth
        seen.add(new is None)
    assert seen == {True, False}  # the limit lies inside the range tried
    deep_ack = json.dumps({**_GOOD_ACK, "receiver": "@"}).replace('"@"', _nested(100_000, True, False)).encode()
    assert _old("down", deep_ack) is None
    assert _new("down", deep_ack) is None


def test_huge_input_is_one_clear_error() -> None:
    """A number of 100,000 digits, a decompression bomb, a document of 8 MB that is no command."""
    digits = json.dumps(_GOOD_ACK).replace('"stored": 2', '"stored": ' + "9" * 100_000).encode()
    assert _old("down", digits) is None
    assert _new("down", digits) is None
    bomb = wire.Frame(wire.CODEC_ZLIB_JSON, b"", zlib.compress(b" " * (80 * 1024 * 1024)))
    with pytest.raises(WireError, match="64 MiB"):
        wire_msgs.decode_command(bomb)
    big = json.dumps({**_GOOD_CMD, "extra": "x" * 8_000_000}).encode()
    assert _old("command", big) is None
    assert _new("command", big) is None


# --- what the agent writes: the bytes pydantic wrote --------------------------------------------

_any_float = st.one_of(
    st.floats(),
    st.sampled_from([1e15, 9.999999999999998e15, 1e16, 1e-5, 9.99e-6, 1e-7, 5e-324, 1.7976931348623157e308]),
)
_buffers = st.fixed_dictionaries(
    {"depth": _counts, "bytes": _counts},
    optional={"oldest_ts": st.one_of(st.none(), _any_float),
              "dropped": st.dictionaries(_text, st.integers(-(2**70), 2**70), max_size=3), "rejected": _counts},
)  # fmt: skip
_status_fields = st.fixed_dictionaries(
    {"site_id": _SITE, "state": st.sampled_from(["online", "offline"])},
    optional={
        "ts": st.one_of(st.none(), _any_float, st.integers(-(2**53), 2**53)),
        "connected_at": st.one_of(st.none(), _any_float),
        "buffer": st.one_of(st.none(), _buffers),
        "in_flight": st.integers(-(2**70), 2**70),
        "rejected_batches": st.integers(0, 2**40),
        "last_rejection": st.one_of(st.none(), _text),
        "agent_version": _text,
        "config_version": st.one_of(st.none(), st.integers(-(2**70), 2**70)),
        "update_state": _text,
        "release": st.one_of(st.none(), _text),
        "healthy": st.one_of(st.none(), st.booleans()),
        "readings_per_s": st.one_of(st.none(), _any_float, st.integers(0, 10**6)),
    },
)
_reply_fields = st.fixed_dictionaries(
    {"site_id": _SITE, "command_id": _text, "outcome": st.sampled_from(["accepted", "refused", "failed"]),
     "ts": st.one_of(_any_float, st.integers(-(2**53), 2**53))},
    optional={"reason": _text, "phase": st.sampled_from(["", "staged", "committed", "rolled-back", "aborted"]),
              "version": st.one_of(st.none(), st.integers(-(2**70), 2**70))},
)  # fmt: skip


def _struct_fields(fields: dict[str, Any]) -> dict[str, Any]:
    buffer = fields.get("buffer")
    if buffer is None:
        return fields
    return {**fields, "buffer": wire_msgs.build(wire_msgs.BufferStats, **buffer)}


@settings(max_examples=500, deadline=None)
@given(_status_fields)
@example({"site_id": "s", "state": "online", "ts": 1e16, "readings_per_s": 5, "buffer": {"depth": 1, "bytes": 2}})
@example({"site_id": "s", "state": "offline", "ts": math.nan, "connected_at": -math.inf, "agent_version": "\u2028\x7f"})
def test_the_status_is_written_byte_for_byte_as_pydantic_wrote_it(fields: dict[str, Any]) -> None:
    new = wire_msgs.build(wire_msgs.Status, **_struct_fields(fields))
    assert wire_msgs.encode_small(new) == wire.Status(**fields).model_dump_json().encode()


@settings(max_examples=300, deadline=None)
@given(_reply_fields)
@example({"site_id": "s", "command_id": "c", "outcome": "accepted", "ts": 3, "reason": 'é"\\\n\x00'})
def test_a_command_reply_is_written_byte_for_byte_as_pydantic_wrote_it(fields: dict[str, Any]) -> None:
    new = wire_msgs.build(wire_msgs.CommandReply, **fields)
    assert wire_msgs.encode_small(new) == wire.CommandReply(**fields).model_dump_json().encode()


@settings(max_examples=200, deadline=None)
@given(_buffers)
def test_a_batch_carries_the_same_buffer_stats(buffer: dict[str, Any]) -> None:
    chunks = [(1, 1, 2, '{"seq":1}')]
    new = batch_json_chunks("s", "b", 1.0, chunks, wire_msgs.build(wire_msgs.BufferStats, **buffer))
    assert new == batch_json_chunks("s", "b", 1.0, chunks, wire.BufferStats(**buffer))


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        (wire_msgs.Status, {"site_id": "Site A", "state": "online"}),
        (wire_msgs.Status, {"site_id": "s", "state": "asleep"}),
        (wire_msgs.Status, {"site_id": "s", "state": "online", "healthy": "maybe"}),
        (wire_msgs.Status, {"site_id": "s", "state": "online", "colour": "red"}),
        (wire_msgs.CommandReply, {"site_id": "s", "command_id": "c", "outcome": "done", "ts": 1.0}),
        (wire_msgs.CommandReply, {"site_id": "s", "command_id": "c", "outcome": "accepted"}),
        (wire_msgs.BufferStats, {"depth": -1, "bytes": 0}),
    ],
)
def test_what_pydantic_refused_to_build_is_refused(cls: type[wire_msgs.WireStruct], fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        getattr(wire, cls.__name__)(**fields)
    with pytest.raises(WireError, match=f"not a valid {cls.__name__}: "):
        wire_msgs.build(cls, **fields)


def test_text_that_is_not_unicode_is_one_wire_error() -> None:
    reply = wire_msgs.build(wire_msgs.CommandReply, site_id="s", command_id="c", outcome="failed", ts=1.0,
                            reason="bad \udcff byte")  # fmt: skip
    with pytest.raises(WireError, match="not valid Unicode"):
        wire_msgs.encode_small(reply)


# --- the agent's process ------------------------------------------------------------------------

_PROBE = r"""
import sys, zlib
from sync import ed25519
from sync.commands_in import CommandIntake
from sync.signing import Signer, open_command, open_down, sign_status
from sync.wire_base import CODEC_JSON, pack_frame
from sync.wire_batch import batch_json_chunks
from sync.wire_msgs import BufferStats, CommandReply, Status, build
key = ed25519.private_from_pem(sys.stdin.buffer.read())
assert key is not None
s = Signer(key)
ack = (b'{"type":"ack","site_id":"site-a","batch_id":"b-1","first_seq":1,"last_seq":2,"batch_sha256":"'
       + b"a" * 64 + b'","stored":2,"duplicates":0}')
assert open_down(pack_frame(ack, s.sign(ack), CODEC_JSON, "b-1"), [s.public_key()]).stored == 2
cmd = zlib.compress(b'{"command_id":"c-1","target":"site-a","kind":"lighting","issued_at":1.0,"expires_at":2.0}')
assert open_command(s.frame(cmd, "c-1"), [s.public_key()], "site-a", "lighting").kind == "lighting"
buf = build(BufferStats, depth=1, bytes=2)
sign_status(build(Status, site_id="site-a", state="online", buffer=buf), s)
s.small_frame(build(CommandReply, site_id="site-a", command_id="c-1", outcome="accepted", ts=1.0))
batch_json_chunks("site-a", "b-1", 1.0, [(1, 1, 2, "{}")], buf)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core", "kernel", "sync")))
"""


def test_the_agents_wire_path_imports_no_pydantic() -> None:
    """Decoding acks and commands, signing status and replies, writing a batch: no pydantic loaded."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], input=pem, capture_output=True, check=False, timeout=60, cwd=REPO
    )
    assert out.returncode == 0, out.stderr.decode()
    modules = out.stdout.decode()
    assert "sync.wire_msgs" in modules, modules
    assert "pydantic" not in modules, modules
    assert "'sync.wire'" not in modules, modules
