"""A NUL in a reading's text never costs a batch: the centre cannot store NUL (the wire refuses it,
so one such reading would set its whole batch aside), so the store keeps it as U+FFFD and counts it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernel.metrics import Metrics
from kernel.readings import ClockQuality, Priority, Quality, Reading
from sync import rowcodec, wire
from sync.store import Store
from sync.wire import BufferStats


def _reading(value: object = 1.0, device: str = "meter-1", point: str = "v", unit: str = "V",
             meta: dict[str, str] | None = None) -> Reading:
    return Reading(device, point, value, 1_700_000_000.0, unit, Quality.GOOD, Priority.TELEMETRY,
                   ClockQuality.SYNCED, meta)  # type: ignore[arg-type]


def _decoded(tails: list[str]) -> list[dict[str, object]]:
    return [json.loads('{"seq":1' + t) for t in tails]


def test_a_nul_in_any_text_is_stored_as_the_replacement_character_and_noted() -> None:
    readings = [
        _reading("ab\x00c"),
        _reading(2.0, unit="k\x00V", point="p2"),
        _reading(3.0, meta={"why": "x\x00"}, point="p3"),
        _reading(4.0, device="m\x00", point="p4"),
        _reading(5.0, point="clean"),
    ]
    repaired: list[tuple[str, str]] = []
    docs = _decoded(rowcodec.encode_tails(readings, repaired))
    assert docs[0]["value"] == "ab\ufffdc"
    assert docs[1]["unit"] == "k\ufffdV"
    assert docs[2]["meta"] == {"why": "x\ufffd"}
    assert docs[3]["device"] == "m\ufffd"
    assert docs[4] == {**docs[4], "value": 5.0, "unit": "V", "meta": None}
    assert not any("\x00" in json.dumps(d, ensure_ascii=False) for d in docs)
    assert sorted(repaired) == sorted([("meter-1", "v"), ("meter-1", "p2"), ("meter-1", "p3"), ("m\x00", "p4")])


def test_a_lone_surrogate_is_stored_as_the_replacement_character() -> None:
    """Bytes decoded with ``surrogateescape`` (a serial device's garbage) leave lone surrogates: not
    UTF-8, so neither SQLite's text nor the centre can hold them."""
    repaired: list[tuple[str, str]] = []
    raw = b"ok\xff\xfe".decode("utf-8", "surrogateescape")
    docs = _decoded(rowcodec.encode_tails([_reading(raw), _reading(1.0, meta={"k": raw}, point="m")], repaired))
    assert docs[0]["value"] == "ok\ufffd\ufffd"
    assert docs[1]["meta"] == {"k": "ok\ufffd\ufffd"}
    assert repaired == [("meter-1", "v"), ("meter-1", "m")]


def test_clean_text_is_unchanged_and_nothing_is_noted() -> None:
    repaired: list[tuple[str, str]] = []
    rs = [_reading("plain text ✓", point="s"), _reading(7, point="i"), _reading(None, point="n")]
    docs = _decoded(rowcodec.encode_tails(rs, repaired))
    assert [d["value"] for d in docs] == ["plain text ✓", 7, None]
    assert repaired == []


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20), st.text(max_size=8), st.dictionaries(st.text(max_size=4), st.text(max_size=6), max_size=2))
@example("a\x00b\ud800", "\udcff", {"\x00": "\udc80"})
def test_whatever_text_a_device_sends_its_batch_passes_the_centres_checks(value: str, unit: str,
                                                                        meta: dict[str, str]) -> None:
    """Any text (NUL included) gives a batch the centre's decoder accepts, with the reading in it."""
    stats = BufferStats(depth=1, bytes=10, oldest_ts=None, dropped={}, rejected=0)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.db", "site-1") as store:
        store.append([_reading(value, unit=unit, meta=meta or None)])
        doc = wire.batch_json_chunks("site-1", "b1", 2.5, store.pending_chunks(10, 0, Priority.TELEMETRY), stats)
    batch = wire.decode_batch(wire.unpack_frame(wire.pack_frame(wire.compress(doc), msg_id="b1")))
    (got,) = batch.readings
    assert got.value == rowcodec.storable(value)
    assert got.unit == rowcodec.storable(unit)


def test_the_store_accepts_it_counts_it_and_logs_each_point_once(tmp_path: Path, caplog) -> None:
    metrics = Metrics()
    with Store(tmp_path / "s.db", "site-1", metrics=metrics) as store:
        seqs = store.append([_reading("x\x00y"), _reading("z\x00", point="w")])
        store.append([_reading("again\x00")])
        assert len(seqs) == 2
        assert metrics.total("kbe_store_text_repaired_total") == 3
        values = [r[5] for r in store.pending_rows(10, 0, Priority.TELEMETRY)]
        assert values == ["x\ufffdy", "z\ufffd", "again\ufffd"]
        lines = [r.getMessage() for r in caplog.records if "NUL" in r.getMessage()]
        assert len(lines) == 2  # meter-1/v once (twice repaired), meter-1/w once


def test_a_nul_in_a_point_name_alone_is_noted_at_every_commit() -> None:
    """A point name is encoded once into the (device, point) head the encoder keeps: its repair
    is still noted, at the first commit and at each later one that reuses the head."""
    enc = rowcodec.TailEncoder()
    for _ in range(2):
        repaired: list[tuple[str, str]] = []
        (doc,) = _decoded(enc.encode([_reading(1.0, point="p\x00")], repaired))
        assert doc["point"] == "p\ufffd"
        assert repaired == [("meter-1", "p\x00")]


def test_readings_that_differ_only_in_clock_quality_keep_their_own() -> None:
    """The unit/quality/class/clock text is reused while consecutive readings share them: a change
    of clock quality alone starts a new one."""
    rs = [_reading(1.0), Reading("meter-1", "p2", 2.0, 1_700_000_000.0, "V", Quality.GOOD, Priority.TELEMETRY,
                                  ClockQuality.UNSYNCED, None)]
    docs = _decoded(rowcodec.encode_tails(rs))
    assert [d["clock"] for d in docs] == [int(ClockQuality.SYNCED), int(ClockQuality.UNSYNCED)]


class _State(str):
    """A str subclass (a StrEnum member, say): a value the encoder's plain-str path does not take."""


def test_a_str_subclass_value_is_stored_as_its_text_with_nul_repaired() -> None:
    docs = _decoded(rowcodec.encode_tails([_reading(_State("on")), _reading(_State("o\x00ff"), point="s")]))
    assert [d["value"] for d in docs] == ["on", "o\ufffdff"]


def test_the_store_logs_at_most_1000_repaired_points(tmp_path: Path, caplog) -> None:
    """Each repaired point is logged once, and at most 1,000 of them (a device sending garbage under
    ever new names cannot flood the log); every repair is still counted."""
    metrics = Metrics()
    with Store(tmp_path / "s.db", "site-1", metrics=metrics) as store:
        store.append([_reading(f"x\x00{i}", point=f"p{i}") for i in range(1001)])
        store.append([_reading("y\x00", point="late")])
    assert metrics.total("kbe_store_text_repaired_total") == 1002
    lines = [r.getMessage() for r in caplog.records if "NUL" in r.getMessage()]
    assert len(lines) == 1000
