"""One stored row per poll: the row encoding, seq-range acks and rejections across row boundaries,
and the migration of a store written in the one-row-per-reading layout (schema version 1)."""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernel.readings import ClockQuality, Priority, Quality, Reading
from sync import rowcodec, wire
from sync.store import Store, StoreFile
from sync.store_schema import MIGRATIONS, SCHEMA_VERSION
from sync.wire import BufferStats

# The wire refuses NUL in any text (the centre cannot store it: docs/wire-protocol.md), so the
# readings drawn here hold none; every other character, escapes and quotes included, is drawn.
text = functools.partial(st.text, alphabet=st.characters(blacklist_characters="\x00"))

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.none(),
    text(max_size=20),
)
names = text(min_size=1, max_size=12)
readings = st.builds(
    Reading,
    device=st.sampled_from(["m-1", "Trạm đo 2", 'q"uo,{"seq":te']),
    point=names,
    value=values,
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    unit=text(max_size=5),
    quality=st.sampled_from(Quality),
    priority=st.sampled_from(Priority),
    clock=st.sampled_from(ClockQuality),
    meta=st.one_of(st.none(), st.dictionaries(text(max_size=5), text(max_size=8), max_size=2)),
)


def _as_stored(r: Reading) -> Reading:
    """What the store gives back: NaN as None (SQL NULL, as always), an empty meta as None, a lone
    surrogate as U+FFFD (``rowcodec.UNSTORABLE``)."""
    nan = isinstance(r.value, float) and math.isnan(r.value)
    value = None if nan else rowcodec.storable(r.value) if isinstance(r.value, str) else r.value
    meta = {rowcodec.storable(k): rowcodec.storable(v) for k, v in r.meta.items()} if r.meta else None
    s = rowcodec.storable
    return Reading(s(r.device), s(r.point), value, r.ts, s(r.unit), r.quality, r.priority, r.clock, meta)


@settings(max_examples=80, deadline=None)
@given(st.lists(readings, min_size=1, max_size=150), st.integers(min_value=1, max_value=10**12))
def test_rows_round_trip_any_reading(rs: list[Reading], first: int) -> None:
    rows = rowcodec.build_rows(first, rs, rowcodec.encode_tails(rs))
    assert rows[0][0] == first
    assert rows[-1][1] == first + len(rs) - 1
    back = []
    for a, b, prio, ts, n, text in rows:
        assert n == b - a + 1 <= rowcodec.ROW_MAX
        frags = rowcodec.split(rowcodec.unpack(text))
        assert len(frags) == n
        decoded = [rowcodec.decode(f) for f in frags]
        assert [s for s, _ in decoded] == list(range(a, b + 1))
        assert {r.priority for _, r in decoded} == {prio}
        assert ts == decoded[0][1].ts
        back.extend(r for _, r in decoded)
    want = [_as_stored(r) for r in rs]
    assert back == want
    assert [type(b.value) for b in back] == [type(w.value) for w in want]
    assert [b.meta for b in back] == [w.meta for w in want]


@settings(max_examples=40, deadline=None)
@given(st.lists(readings, min_size=1, max_size=100))
def test_batch_of_stored_rows_is_the_batch_of_their_readings_byte_for_byte(rs: list[Reading]) -> None:
    """A concatenation of stored rows is exactly the document the per-reading encoder writes."""
    stats = BufferStats(depth=len(rs), bytes=10, oldest_ts=None, dropped={}, rejected=0)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.db", "site-1") as store:
        store.append(rs)
        for prio in Priority:
            chunks = store.pending_chunks(1000, 0, prio)
            if not chunks:
                continue
            per_reading = store.pending_rows(1000, 0, prio)
            fast = wire.batch_json_chunks("site-1", "b1", 2.5, chunks, stats)
            assert fast == wire.batch_json_rows("site-1", "b1", 2.5, per_reading, stats)
            batch = wire.decode_batch(wire.unpack_frame(wire.pack_frame(wire.compress(fast), msg_id="b1")))
            assert batch.seqs() == [r[0] for r in per_reading]


def test_per_reading_rows_carry_the_value_type_tag(tmp_path: Path) -> None:
    """``pending_rows`` gives the per-reading layout (``sync.wire.StoredRow``): each value with the
    type tag schema version 1 stored beside it."""
    values = [None, True, 7, 1.5, "open"]
    with Store(tmp_path / "s.db", "site-1") as store:
        store.append([Reading("m", f"p{i}", v, 1.7e9 + i, "V", meta={"k": "v"} if i else None)
                      for i, v in enumerate(values)])
        rows = store.pending_rows(10, 0, Priority.TELEMETRY)
        assert [r[0] for r in store.pending_rows(2, 2, Priority.TELEMETRY)] == [3, 4]  # after seq 2, at most 2
    assert [(r[0], r[5], r[6]) for r in rows] == [
        (1, None, wire.VT_NULL), (2, True, wire.VT_BOOL), (3, 7, wire.VT_INT), (4, 1.5, wire.VT_FLOAT),
        (5, "open", wire.VT_STR)]
    assert [r[10] for r in rows] == [None, '{"k":"v"}', '{"k":"v"}', '{"k":"v"}', '{"k":"v"}']


def _polls(n: int, points: int, start: int = 0) -> list[Reading]:
    return [Reading(f"meter-{(start + i) % 5}", f"p{j}", float(i * 100 + j), 1.7e9 + i, "V")
            for i in range(n) for j in range(points)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=5),
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=-2, max_value=360),
    st.tuples(st.integers(min_value=0, max_value=80), st.integers(min_value=0, max_value=80)),
)
@example(points=[5], first=1, keep=4, window=(0, 0))  # cut one reading short of a whole row
@example(points=[5], first=1, keep=3, window=(1, 3))
def test_chunks_cut_and_clip_to_exactly_the_seqs_asked(points: list[int], first: int, keep: int,
                                                        window: tuple[int, int]) -> None:
    """Rows as the uplink reads them (chunks): counting, listing, cutting to the first ``keep``
    readings and clipping one row to a seq window give exactly those readings, each decodable."""
    rs = [r for k, p in enumerate(points) for r in _polls(1, p, start=k)]
    rows = rowcodec.build_rows(first, rs, rowcodec.encode_tails(rs))
    chunks = [(a, b, prio, rowcodec.unpack(body)) for a, b, prio, _ts, _n, body in rows]
    every = list(range(first, first + len(rs)))
    assert rowcodec.count(chunks) == len(rs)
    assert rowcodec.seqs_of(chunks) == every

    def seqs_in(chunk: rowcodec.Chunk) -> list[int]:
        decoded = [s for s, _ in rowcodec.decode_text(chunk[3])]
        assert decoded == list(range(chunk[0], chunk[1] + 1))
        return decoded

    kept = rowcodec.cut(chunks, keep)
    assert [s for c in kept for s in seqs_in(c)] == every[: max(keep, 0)]
    assert rowcodec.count(kept) == min(max(keep, 0), len(rs))
    for chunk in chunks:
        a, b = chunk[0], chunk[1]
        lo, hi = a + min(window), a + max(window)
        if lo > b:
            continue
        clipped = rowcodec.clip(chunk, lo, hi)
        assert seqs_in(clipped) == list(range(lo, min(hi, b) + 1))
        assert rowcodec.row_ts(clipped[3]) == rs[lo - first].ts
        assert clipped[2] == chunk[2]
        assert rowcodec.clip(chunk, a - 1, b + 1) == chunk


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(min_value=1, max_value=400), st.integers(min_value=0, max_value=90),
                       st.booleans()), max_size=8),
)
def test_seq_range_acks_and_rejections_take_exactly_their_readings(points: list[int], cuts: list) -> None:
    """Any seq ranges, cutting rows anywhere: exactly the readings named leave (acked, or set aside
    and then put back by a resend); the rest stay readable, in order, and the depth is right."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        with Store(path, "site-1") as store:
            everything: dict[int, Reading] = {}
            for k, p in enumerate(points):
                rs = _polls(3, p, start=k)
                everything.update(zip(store.append(rs), rs, strict=True))
            left = dict(everything)
            aside: dict[int, Reading] = {}
            for i, (lo, length, reject) in enumerate(cuts):
                seqs = list(range(lo, lo + length))
                present = [s for s in seqs if s in left]
                if reject:
                    assert store.reject(seqs, f"b{i}", "malformed") == len(present)
                    aside.update((s, left[s]) for s in present)
                else:
                    assert store.ack(seqs) == len(present)
                for s in present:
                    del left[s]
                assert store.depth() == len(left)
                got = store.pending(100_000)
                assert [(g.seq, g.reading) for g in got] == sorted(left.items())
            assert store.stats().depth == len(left)
            assert sum(b.count for b in store.rejected_batches()) == len(aside)
            for b in store.rejected_batches():
                for r in store.rejected_readings(b.batch_id):
                    assert aside[r.seq] == r.reading
        sf = StoreFile(path, write=True)
        try:
            sf.resend([b.batch_id for b in sf.rejected_batches()])
        finally:
            sf.close()
        with Store(path, "site-1") as store:
            back = {g.seq: g.reading for g in store.pending(100_000)}
            assert back == {**left, **aside}
            assert store.stats().depth == len(back)


def test_batches_cutting_rows_send_every_reading_once(tmp_path: Path) -> None:
    """Batch sizes that do not fall on row boundaries: rows are split, nothing is sent twice or lost."""
    from agent.config import SyncConfig
    from kernel.clock import Clock
    from sync.batches import BatchComposer
    from sync.signing import Signer, generate_keypair

    key, pub = generate_keypair(tmp_path / "keys", "site")
    cfg = SyncConfig.model_validate({"broker": "mqtt://127.0.0.1:1", "allow_plaintext": True,
                                     "signing_key_file": str(key), "centre_public_keys": [str(pub)],
                                     "live_share": 0.25, "batch": {"max_count": 37, "backlog_max_count": 37}})
    with Store(tmp_path / "s.db", "site-1") as store:
        seqs = store.append(_polls(20, 50))
        sent: set[int] = set()
        composer = BatchComposer(cfg, "site-1", store, Clock(), Signer.from_file(key), sent)
        composer.reset()
        seqs += store.append(_polls(3, 50, start=20))  # live data arriving while the backlog drains
        composer.flushing = True
        seen: list[int] = []
        while (prepared := composer.prepare()) is not None:
            composed, (frame, batch_id, got, _digest) = prepared
            batch = wire.decode_batch(wire.unpack_frame(frame))
            assert batch.seqs() == got
            assert batch.batch_id == batch_id
            assert len(got) <= 37
            sent.update(got)
            composer.advance(composed)
            seen.extend(got)
            if len(seen) % 2:
                store.ack(got)  # some acked at once, some still in flight
                sent.difference_update(got)
        assert sorted(seen) == seqs
        assert len(seen) == len(set(seen))


# --- migration from schema version 1 (one row per reading) ---------------------------------------

_V1_INSERT = ("INSERT INTO {table} (seq, priority, ts, device, point, value, vtype, unit, quality, clock, meta{extra}) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?{marks})")


def _v1_row(seq: int, r: Reading) -> tuple:
    """A reading as version 1 stored it: value with a type tag (bool as int), meta as JSON text."""
    v = r.value
    vtype, value = ((wire.VT_NULL, None) if v is None else (wire.VT_BOOL, int(v)) if isinstance(v, bool)
                    else (wire.VT_INT, v) if isinstance(v, int) else (wire.VT_FLOAT, v) if isinstance(v, float)
                    else (wire.VT_STR, v))  # fmt: skip
    meta = json.dumps(r.meta, separators=(",", ":"), ensure_ascii=False) if r.meta else None
    return (seq, int(r.priority), r.ts, r.device, r.point, value, vtype, r.unit, int(r.quality), int(r.clock), meta)


def _write_v1_store(path: Path, waiting: dict[int, Reading], rejected: dict[int, tuple[Reading, str]],
                    last_seq: int) -> None:
    """A store file exactly as schema version 1 (its own DDL, migration 0) left it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN")
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO meta (key, value) VALUES ('site_id', 'site-a')")
    db.executemany(_V1_INSERT.format(table="readings", extra="", marks=""),
                   [_v1_row(s, r) for s, r in waiting.items()])
    db.executemany(_V1_INSERT.format(table="rejected", extra=", batch_id, reason, rejected_at", marks=", ?, ?, ?"),
                   [(*_v1_row(s, r), bid, "malformed: bad", 1.7e9) for s, (r, bid) in rejected.items()])
    db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'readings'", (last_seq,))
    db.executemany("INSERT INTO counters (name, value) VALUES (?, ?)",
                   [("dropped_telemetry", 17), ("rejected", len(rejected)), ("resend_generation", 2)])
    db.execute("COMMIT")
    db.close()


def test_a_version_1_store_is_migrated_on_open_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    (tmp_path / "s.db.seq").write_text("1000000\n")
    mixed = ["x", 7, True, None, 1.5, "Trạm Bắc Ninh ✓", -(2**63), float("inf")]
    waiting: dict[int, Reading] = {}
    seq = 0
    for i in range(150):  # telemetry polls with holes where acks removed readings
        seq += 1 if i % 40 else 3
        waiting[seq] = Reading(f"meter-{i // 70}", f"p{i}", mixed[i % len(mixed)], 1.7e9 + i, "V")
    seq += 1
    waiting[seq] = Reading("cabinet", "door", "open", 1.7e9, priority=Priority.ALARM, meta={"text": "cửa mở"})
    seq += 1
    waiting[seq] = Reading("meter-1", "availability", "offline", 1.7e9, priority=Priority.EVENT,
                           quality=Quality.BAD, clock=ClockQuality.RTC)
    rejected = {seq + 1 + i: (Reading("meter-9", f"q{i}", float(i), 1.6e9 + i), "b-1" if i < 30 else "b-2")
                for i in range(45)}
    _write_v1_store(path, waiting, rejected, last_seq=seq + 60)
    waiting[seq + 50] = Reading("meter-1", "flow", None, 1.7e9, "V")  # version 1 kept a NaN as NULL, typed float
    with sqlite3.connect(path) as db:
        db.execute(_V1_INSERT.format(table="readings", extra="", marks=""),
                   (seq + 50, int(Priority.TELEMETRY), 1.7e9, "meter-1", "flow", math.nan, wire.VT_FLOAT, "V",
                    int(Quality.GOOD), int(ClockQuality.SYNCED), None))

    with Store(path, "site-a") as s:
        got = s.pending(10_000)
        assert [(g.seq, g.reading) for g in got] == sorted(waiting.items())
        assert [type(g.reading.value) for g in got] == [type(waiting[g.seq].value) for g in got]
        assert [g.reading.meta for g in got] == [waiting[g.seq].meta for g in got]  # meta is not compared by ==
        assert [g.seq for g in s.pending(10, priority=Priority.ALARM)] == [seq - 1]
        assert s.stats().depth_by_priority == {Priority.ALARM: 1, Priority.EVENT: 1, Priority.TELEMETRY: 151}
        assert s.stats().dropped[Priority.TELEMETRY] == 17
        assert s.stats().last_seq == seq + 60
        assert s.stats().oldest_ts == waiting[min(waiting)].ts
        batches = s.rejected_batches()
        assert [(b.batch_id, b.count, b.reason) for b in batches] == [("b-1", 30, "malformed: bad"),
                                                                      ("b-2", 15, "malformed: bad")]
        assert {r.seq: r.reading for b in batches for r in s.rejected_readings(b.batch_id)} == {
            k: r for k, (r, _) in rejected.items()}
        assert not s.resend_requested()
        assert s.append([Reading("m", "p", 1.0, 1.0)]) == [seq + 61]
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"readings", "rejected"}.isdisjoint(tables)
        # Consecutive seqs of one class became one row (up to 64): the four telemetry runs between
        # the holes, the alarm, the event, the NaN reading (and the reading appended since); the two
        # rejected batches one row each.
        assert db.execute("SELECT COUNT(*) FROM polls").fetchone()[0] == 8
        assert db.execute("SELECT COUNT(*) FROM rejected_polls").fetchone()[0] == 2
    finally:
        db.close()


def test_store_tool_refuses_an_unmigrated_file(tmp_path: Path) -> None:
    from kernel.errors import StoreError

    _write_v1_store(tmp_path / "s.db", {1: Reading("m", "p", 1.0, 1.0)}, {}, last_seq=1)
    with pytest.raises(StoreError, match="schema version 1 was written by an older agent; start the agent once") as err:
        StoreFile(tmp_path / "s.db")
    assert str(err.value).endswith("losing nothing), then run this again")  # what to do after the start
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1} was written by a newer agent"):
        StoreFile(tmp_path / "s.db")


def test_tools_count_waiting_readings_before_and_after_the_migration(tmp_path: Path) -> None:
    """The commissioning check counts readings, not rows, in a file of either version."""
    from sync.store import last_issued_seq, waiting_readings

    path = tmp_path / "s.db"
    _write_v1_store(path, {k: Reading("m", f"p{k}", float(k), 1.0) for k in range(1, 131)}, {}, last_seq=140)
    with sqlite3.connect(path) as db:
        assert waiting_readings(db) == 130
    Store(path, "site-a").close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT COUNT(*) FROM polls").fetchone()[0] < 130  # rows hold many readings
        assert waiting_readings(db) == 130
        assert last_issued_seq(db) == 140
    finally:
        db.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(readings, min_size=1, max_size=30), min_size=1, max_size=6))
def test_an_encoder_kept_between_commits_writes_what_a_fresh_one_writes(commits: list[list[Reading]]) -> None:
    """The store keeps one :class:`rowcodec.TailEncoder` (its (device, point) heads cached across
    commits): every commit's text is exactly a fresh encoder's."""
    kept = rowcodec.TailEncoder()
    for rs in commits:
        assert kept.encode(rs) == rowcodec.encode_tails(rs)


def test_the_encoders_head_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rowcodec, "HEADS_MAX", 10)
    enc = rowcodec.TailEncoder()
    for i in range(25):
        rs = [Reading(f"m-{i}", "p", 1.0, 1.0), Reading(f"m-{i}", "q", 2.0, 1.0)]
        assert enc.encode(rs) == rowcodec.encode_tails(rs)
        assert len(enc._heads) <= 10
    noted: list[tuple[str, str]] = []
    enc.encode([Reading("m\x00", "p", 1.0, 1.0)], noted)
    enc.encode([Reading("m\x00", "p", 1.0, 1.0)], noted)  # the cached head still counts its repair
    assert noted == [("m\x00", "p"), ("m\x00", "p")]


class _Float(float):
    """A float subclass, as numpy's float64 is: model and driver values can be one."""


def test_nan_is_stored_as_null_and_float_subclasses_as_numbers() -> None:
    """A NaN value (a float or a float subclass such as numpy's) is stored as JSON null, as SQL NULL
    always was; a float subclass is stored as the plain number it holds."""
    rs = [Reading("m-1", "a", math.nan, 1.0), Reading("m-1", "b", _Float("nan"), 1.0),
          Reading("m-1", "c", _Float(2.5), 1.0), Reading("m-1", "d", _Float("inf"), 1.0)]
    rows = rowcodec.build_rows(1, rs, rowcodec.encode_tails(rs))
    frags = rowcodec.split(rowcodec.unpack(rows[0][5]))
    assert [json.loads(f)["value"] for f in frags] == [None, None, 2.5, math.inf]
    values = [rowcodec.decode(f)[1].value for f in frags]
    assert values == [None, None, 2.5, math.inf]
    assert [type(v) for v in values] == [type(None), type(None), float, float]
