"""Batch composition (:mod:`sync.batches`): which stored rows go into the next batch, and its signed frame.

Fast unit tests on a real SQLite store with real Ed25519 keys; nothing is published (the uplink's
loop around the composer is tested over a real Mosquitto in test_uploader.py and test_delivery.py).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.readings import Priority, Reading
from sync import rowcodec, wire
from sync.batches import BatchComposer, Composed
from sync.signing import Signer, generate_keypair, verify_frame
from sync.store import Store
from tests.sync.conftest import SITE, alarm, make_readings, sync_config

T, E, A = Priority.TELEMETRY, Priority.EVENT, Priority.ALARM


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys", "centre")
    return generate_keypair(tmp_path / "site-keys", SITE)[0]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db", SITE, metrics=Metrics())
    yield s
    s.close()


def composer(store: Store, key: Path, sent: set[int] | None = None, **cfg: Any) -> BatchComposer:
    """A composer with max_count 8, live share 0.25 and partial batches held an hour, unless ``cfg`` says otherwise."""
    batch = {"max_count": 8, "max_age_s": 3600, **cfg.pop("batch", {})}
    c = sync_config("mqtt://127.0.0.1:1883", key, batch=batch, **cfg)
    return BatchComposer(c, SITE, store, Clock(), Signer.from_file(key), set() if sent is None else sent)


def event(i: int) -> Reading:
    return Reading("door-1", "open", True, 1_790_000_000.0 + i, priority=Priority.EVENT)


def noisy(n: int) -> list[Reading]:
    """Telemetry that hardly compresses (about 60 bytes a reading)."""
    return [Reading("cam-1", "blob", os.urandom(60).hex(), 1_790_000_000.0 + i) for i in range(n)]


def seqs(c: Composed) -> list[int]:
    """Every seq the composed rows hold, in order (a row holds a run of them)."""
    return rowcodec.seqs_of(c.rows)


def test_a_full_batch_takes_the_newest_share_then_the_oldest(store: Store, keys: Path) -> None:
    store.append(make_readings(20))
    c = composer(store, keys)
    got = c.compose(8)
    assert got is not None
    # A quarter (2) from the newest telemetry, the other 6 from the oldest; in seq order.
    assert seqs(got) == [1, 2, 3, 4, 5, 6, 19, 20]
    assert got.live == {19, 20}
    assert got.live_top == 20
    assert got.cursors == {A: 0, E: 0, T: 6}
    assert c.cursors == {A: 0, E: 0, T: 0}, "composing alone moves no stream position"
    c.advance(got)
    assert (c.cursors[T], c.live_top) == (6, 20)


def test_alarms_then_events_then_telemetry(store: Store, keys: Path) -> None:
    store.append(make_readings(10))
    store.append([event(i) for i in range(3)])
    store.append([alarm(i) for i in range(4)])
    c = composer(store, keys, live_share=0.0)
    got = c.compose(8)
    assert got is not None
    assert seqs(got) == [1, 11, 12, 13, 14, 15, 16, 17]
    assert got.cursors == {A: 17, E: 13, T: 1}
    assert got.live == set()
    assert got.live_top == 0


def test_live_rows_are_only_those_appended_since_the_last_batch(store: Store, keys: Path) -> None:
    store.append(make_readings(20))
    sent: set[int] = set()
    c = composer(store, keys, sent)
    first = c.compose(8)
    assert first is not None
    c.advance(first)
    store.ack(seqs(first))
    store.append(make_readings(1, start=20))  # seq 21
    got = c.compose(8)
    assert got is not None
    # Seq 18 (backlog, below the last live take) is not live; 7.. continue the oldest.
    assert seqs(got) == [7, 8, 9, 10, 11, 12, 13, 21]
    assert got.live == {21}
    assert got.live_top == 21


def test_rows_in_flight_are_never_taken_again_and_the_cursor_stops_at_the_last_taken(
    store: Store, keys: Path
) -> None:
    store.append(make_readings(30))
    sent = {2, 3, 5}
    c = composer(store, keys, sent, live_share=0.0)
    got = c.compose(8)
    assert got is not None
    assert seqs(got) == [1, 4, 6, 7, 8, 9, 10, 11]
    assert got.cursors[T] == 11
    # Live rows skip what is in flight too.
    c2 = composer(store, keys, {30})
    got2 = c2.compose(8)
    assert got2 is not None
    assert got2.live == {28, 29}, "the newest share skips a row in flight and takes the next newest"
    assert 30 not in seqs(got2)


def test_a_class_with_rows_in_flight_at_its_end_is_read_past_them(store: Store, keys: Path) -> None:
    store.append(make_readings(5))
    c = composer(store, keys, {4, 5}, live_share=0.0, batch={"max_count": 8, "max_age_s": 3600})
    c.flushing = True
    got = c.compose(8)
    assert got is not None
    assert seqs(got) == [1, 2, 3]
    assert got.cursors[T] == 5


def test_a_long_class_is_read_in_pages(store: Store, keys: Path) -> None:
    store.append(make_readings(300))
    sent = set(range(1, 201))  # more in flight than one page holds
    c = composer(store, keys, sent, live_share=0.0)
    got = c.compose(8)
    assert got is not None
    assert seqs(got) == list(range(201, 209))
    assert got.cursors[T] == 208
    c3 = composer(store, keys, live_share=0.0, batch={"max_count": 150, "max_age_s": 3600})
    many = c3.compose(150)
    assert many is not None
    assert seqs(many) == list(range(1, 151))
    assert many.cursors[T] == 150


def test_a_partial_batch_waits_max_age_unless_flushing_or_urgent(store: Store, keys: Path) -> None:
    store.append(make_readings(3))
    c = composer(store, keys, batch={"max_count": 8, "max_age_s": 0.3})
    assert c.compose(8) is None
    since = c.partial_since
    assert since is not None
    assert abs(since - time.monotonic()) < 1
    assert c.compose(8) is None
    assert c.partial_since == since, "the wait runs from the first partial look"
    time.sleep(0.35)
    got = c.compose(8)
    assert got is not None
    assert seqs(got) == [1, 2, 3]
    c.advance(got)
    assert c.partial_since is None
    # After a batch went out, the next partial one waits its own max_age again.
    store.append(make_readings(2, start=3))
    c.sent.update([1, 2, 3])
    assert c.compose(8) is None
    c.flushing = True
    flushed = c.compose(8)
    assert flushed is not None
    assert seqs(flushed) == [4, 5]


def test_an_alarm_or_a_full_batch_goes_at_once(store: Store, keys: Path) -> None:
    store.append(make_readings(2))
    c = composer(store, keys)
    assert c.compose(8) is None
    store.append([alarm(1)])
    got = c.compose(8)
    assert got is not None
    assert 3 in seqs(got)
    store.append(make_readings(5, start=2))
    full = composer(store, keys).compose(8)
    assert full is not None
    assert len(seqs(full)) == 8


def test_nothing_stored_is_no_batch_and_ends_a_partial_wait(store: Store, keys: Path) -> None:
    c = composer(store, keys)
    assert c.compose(8) is None
    assert c.prepare() is None
    seqs_ = store.append(make_readings(2))
    assert c.compose(8) is None
    assert c.partial_since is not None
    store.ack(seqs_)
    assert c.compose(8) is None
    assert c.partial_since is None


def test_reset_rewind_and_advance(store: Store, keys: Path) -> None:
    store.append(make_readings(12))
    c = composer(store, keys)
    got = c.compose(8)
    assert got is not None
    c.advance(got)
    assert c.live_top == 12
    c.reset()
    assert c.cursors == {A: 0, E: 0, T: 0}
    assert c.live_top == 12, "after a restart, live data is what comes after the store's newest seq"
    assert c.partial_since is None
    c.advance(Composed([], {T: 6}, set(), 3))
    assert (c.cursors[T], c.live_top) == (6, 12), "the live top never goes back"
    c.rewind()
    assert c.cursors == {A: 0, E: 0, T: 0}
    assert c.live_top == 12
    # A reset composer's live share is only what is appended after the reset.
    c.flushing = True
    again = c.compose(8)
    assert again is not None
    assert again.live == set()
    assert seqs(again) == list(range(1, 9))
    assert again.live_top == 12


def test_batch_ids_are_unique_per_process_and_count_up(store: Store, keys: Path) -> None:
    a, b = composer(store, keys), composer(store, keys)
    ids = [a.new_batch_id() for _ in range(3)]
    # <random boot id in hex>-<a counter from 1>
    parts = [re.fullmatch(r"([0-9a-f]+)-([1-9][0-9]*)", i) for i in ids]
    assert all(parts), ids
    boot = parts[0].group(1) if parts[0] else ""
    assert ids == [f"{boot}-1", f"{boot}-2", f"{boot}-3"]
    assert b.new_batch_id().rsplit("-", 1)[0] != boot
    assert all(len(i) <= 80 for i in ids)


def test_buffer_stats_report_the_store(store: Store, keys: Path) -> None:
    store.append(make_readings(4))
    seqs_ = store.append([alarm(1)])
    store.reject(seqs_, "b-x", "malformed")
    s = composer(store, keys).buffer_stats()
    st = store.stats()
    assert (s.depth, s.bytes, s.oldest_ts, s.rejected) == (4, st.bytes_used, st.oldest_ts, 1)
    assert s.bytes > 0
    assert s.oldest_ts == make_readings(1)[0].ts
    assert s.dropped == {p.name: n for p, n in st.dropped.items()}
    assert set(s.dropped) <= {"ALARM", "EVENT", "TELEMETRY"}


def test_the_frame_is_signed_and_names_its_rows_and_payload_hash(store: Store, keys: Path) -> None:
    store.append(make_readings(6))
    c = composer(store, keys)
    c.flushing = True
    prepared = c.prepare()
    assert prepared is not None
    composed, (frame, batch_id, sent_seqs, digest) = prepared
    assert sent_seqs == seqs(composed) == [1, 2, 3, 4, 5, 6]
    f = wire.unpack_frame(frame)
    verify_frame(f, [c.signer.public_key()])
    assert f.msg_id == batch_id
    assert digest == wire.content_hash(f.payload)
    batch = wire.decode_batch(f)
    assert (batch.site_id, batch.batch_id, batch.seqs()) == (SITE, batch_id, sent_seqs)
    assert batch.buffer.depth == 6
    assert abs(batch.created_at - time.time()) < 60


def test_a_batch_too_big_for_max_bytes_is_cut_and_the_rest_taken_later(store: Store, keys: Path) -> None:
    store.append(noisy(200))
    store.append([alarm(i) for i in range(3)])  # seqs 201..203: kept first by the cut
    sent: set[int] = set()
    c = composer(store, keys, sent, batch={"max_count": 100, "max_bytes": 4096, "max_age_s": 3600})
    composed = c.compose(100)
    assert composed is not None
    assert composed.live == set(range(176, 201))
    assert composed.cursors == {A: 203, E: 0, T: 72}
    encoded = c.encode_within_bytes(composed)
    assert encoded is not None
    frame, _bid, kept, _digest = encoded
    assert len(frame) <= 4096
    n = len(kept)
    assert 20 <= n < 100
    # The alarms, the live share of the cut batch, the oldest telemetry in the rest.
    n_live = int(n * 0.25)
    n_old = n - 3 - n_live
    assert kept == [*range(1, n_old + 1), *range(176, 176 + n_live), 201, 202, 203]
    assert seqs(composed) == kept
    # What was cut off is not taken: every class restarts after what the frame really holds.
    assert composed.cursors == {A: 203, E: 0, T: n_old}
    assert composed.live_top == 175 + n_live
    # Drain it all: every row exactly once, every frame within max_bytes.
    sent.update(kept)
    c.advance(composed)
    assert sorted(kept + [s for b in drain(c) for s in b]) == list(range(1, 204))


def test_a_cut_keeps_the_live_share_of_what_it_keeps(store: Store, keys: Path) -> None:
    store.append(noisy(30))
    c = composer(store, keys, live_share=0.9, batch={"max_count": 40, "max_bytes": 2048, "max_age_s": 3600})
    c.reset()  # live data: what is appended from now on
    store.append(noisy(30))  # seqs 31..60
    composed = c.compose(40)
    assert composed is not None
    assert seqs(composed) == list(range(1, 11)) + list(range(31, 61))
    encoded = c.encode_within_bytes(composed)
    assert encoded is not None
    kept = encoded[2]
    n = len(kept)
    assert 12 < n < 40
    n_live = int(n * 0.9)
    assert kept == [*range(1, n - n_live + 1), *range(31, 31 + n_live)], "the oldest of each part"
    assert composed.cursors == {A: 0, E: 0, T: n - n_live}
    assert composed.live_top == 30 + n_live
    c.advance(composed)
    assert c.live_top == 30 + n_live
    # Advancing alone moves the streams, even in the middle of a stored row (nothing marked sent here).
    again = c.compose(40)
    assert again is not None
    assert min(again.live) == 31 + n_live
    assert min(seqs(again)) == n - n_live + 1


def test_a_cut_with_few_live_rows_fills_up_with_backlog(store: Store, keys: Path) -> None:
    store.append(noisy(30))  # 1..30
    c = composer(store, keys, live_share=0.9, batch={"max_count": 40, "max_age_s": 3600})
    c.reset()
    store.append(noisy(3))  # 31..33: all the live rows there are
    c.flushing = True
    composed = c.compose(40)
    assert composed is not None
    assert composed.live == {31, 32, 33}
    assert rowcodec.seqs_of(c._keep(composed, 20)) == [*range(1, 18), 31, 32, 33]
    assert rowcodec.seqs_of(c._keep(composed, 2)) == [1, 31], "the live share of 2 is 1"


def test_the_live_share_skips_rows_in_flight_inside_a_stored_row(store: Store, keys: Path) -> None:
    c = composer(store, keys, {5, 8}, live_share=0.5)
    c.reset()
    store.append(make_readings(10))  # one stored row, 1..10, all live
    c.flushing = True
    got = c.compose(8)
    assert got is not None
    assert got.live == {6, 7, 9, 10}, "the newest 4 around the rows in flight"
    wide = c.compose(20)
    assert wide is not None
    assert wide.live == {1, 2, 3, 4, 6, 7, 9, 10}, "fewer than the share: every unsent live row"


def test_a_cut_with_too_little_backlog_fills_up_with_live_rows(store: Store, keys: Path) -> None:
    store.append(noisy(2))
    c = composer(store, keys, live_share=0.5, batch={"max_count": 60, "max_bytes": 1024, "max_age_s": 3600})
    c.reset()
    store.append(noisy(20))  # seqs 3..22: all live
    c.flushing = True
    composed = c.compose(60)
    assert composed is not None
    assert composed.live == set(range(3, 23))
    encoded = c.encode_within_bytes(composed)
    assert encoded is not None
    kept = encoded[2]
    n = len(kept)
    assert 4 < n < 20
    assert kept == list(range(1, n + 1)), "both backlog rows, then the oldest live rows fill the batch"
    assert composed.cursors[T] == 2
    assert composed.live_top == n


def test_a_cut_too_small_for_the_alarms_carries_only_the_oldest_alarms(store: Store, keys: Path) -> None:
    def big(n: int, prio: Priority, t0: int) -> list[Reading]:
        return [
            Reading("cam-1", "blob", os.urandom(60).hex(), 1.79e9 + t0 + i, priority=prio) for i in range(n)
        ]

    store.append(big(40, T, 0))  # 1..40
    store.append(big(30, E, 40))  # 41..70
    store.append(big(30, A, 70))  # 71..100
    c = composer(store, keys, batch={"max_count": 100, "max_bytes": 1024, "max_age_s": 3600})
    batches = drain(c)
    assert sorted(s for b in batches for s in b) == list(range(1, 101))
    assert batches[0] == list(range(71, 71 + len(batches[0]))), "only alarms while alarms wait, oldest first"
    where = {s: i for i, b in enumerate(batches) for s in b}
    assert max(where[s] for s in range(71, 101)) <= min(where[s] for s in range(41, 71)), (
        "alarms before events"
    )
    assert max(where[s] for s in range(41, 71)) <= min(where[s] for s in range(1, 41)), (
        "events before telemetry"
    )
    assert len(batches) > 4


def test_an_uncut_batch_keeps_the_positions_compose_reached(store: Store, keys: Path) -> None:
    store.append(make_readings(5))
    c = composer(store, keys, {4, 5}, live_share=0.0)
    c.flushing = True
    prepared = c.prepare()
    assert prepared is not None
    composed, encoded = prepared
    assert encoded[2] == [1, 2, 3]
    assert composed.cursors[T] == 5


def test_one_reading_bigger_than_max_bytes_still_goes_alone(store: Store, keys: Path) -> None:
    store.append([Reading("cam-1", "blob", os.urandom(2000).hex(), 1_790_000_000.0)])
    store.append(make_readings(1, start=1))
    c = composer(store, keys, batch={"max_count": 8, "max_bytes": 1024, "max_age_s": 3600})
    c.flushing = True
    prepared = c.prepare()
    assert prepared is not None
    frame, _bid, kept, _digest = prepared[1]
    assert kept == [1]
    assert len(frame) > 1024


def test_batches_grow_under_a_backlog_within_max_bytes(store: Store, keys: Path) -> None:
    cfg = {"max_in_flight": 2, "batch": {"max_count": 10, "backlog_max_count": 50, "max_age_s": 3600}}
    c = composer(store, keys, **cfg)
    store.append(make_readings(20))
    assert c.batch_count() == 10, "max_in_flight full batches waiting is no backlog yet"
    store.append(make_readings(2, start=20))
    assert c.batch_count() == 11
    store.append(make_readings(1, start=22))
    assert c.batch_count() == 11, "a whole number of readings: 23 waiting over 2 in flight"
    store.append(make_readings(37, start=23))
    assert c.batch_count() == 30
    store.append(make_readings(100, start=60))
    assert c.batch_count() == 50
    assert (
        composer(store, keys, max_in_flight=2, batch={"max_count": 10, "backlog_max_count": 10}).batch_count()
        == 10
    )


def test_a_backlog_batch_is_bounded_by_what_max_bytes_holds(store: Store, keys: Path) -> None:
    store.append(noisy(2000))
    cfg = {
        "max_in_flight": 1,
        "batch": {"max_count": 10, "backlog_max_count": 1000, "max_bytes": 8192, "max_age_s": 3600},
    }
    c = composer(store, keys, **cfg)
    assert c.batch_count() == 1000, "nothing framed yet: no size estimate"
    small = {"max_in_flight": 1, "batch": {"max_count": 10, "backlog_max_count": 1000, "max_bytes": 1024}}
    assert composer(store, keys, **small).batch_count() == 1000, "not even with a small max_bytes"
    first = c.prepare()
    assert first is not None
    frame, _bid, kept, _d = first[1]
    per_reading = len(frame) / len(kept)
    n = c.batch_count()
    assert 10 < n < 1000
    assert n * per_reading <= 8192, "a batch of that many readings fits max_bytes"
    assert n * per_reading >= 0.8 * 8192, "and uses most of it"


def drain(c: BatchComposer) -> list[list[int]]:
    """Every batch ``c`` prepares until the store has nothing left for it, as lists of seqs."""
    c.flushing = True
    batches: list[list[int]] = []
    while (p := c.prepare()) is not None:
        composed, (frame, _bid, s, _d) = p
        assert len(frame) <= c.cfg.batch.max_bytes
        batches.append(s)
        c.sent.update(s)
        c.advance(composed)
    return batches


def test_an_alarm_behind_a_telemetry_backlog_goes_in_the_first_batch(store: Store, keys: Path) -> None:
    # The bug mut-data found: a byte cut kept the lowest seqs, so the alarm went in batch 47.
    store.append(noisy(2000))
    store.append([alarm(0)])  # seq 2001
    c = composer(store, keys, batch={"max_count": 2000, "max_bytes": 4096, "max_age_s": 3600})
    first = c.prepare()
    assert first is not None
    composed, (frame, _bid, kept, _d) = first
    assert len(frame) <= 4096
    assert 2001 in kept, "an alarm goes out in the first batch that can carry it"
    assert composed.cursors[A] == 2001
    assert 1 < len(kept) < 2000


def test_a_cut_keeps_alarms_then_events_before_any_telemetry(store: Store, keys: Path) -> None:
    store.append(noisy(300))  # 1..300
    store.append([event(i) for i in range(5)])  # 301..305
    store.append([alarm(i) for i in range(3)])  # 306..308
    sent: set[int] = set()
    c = composer(store, keys, sent, batch={"max_count": 400, "max_bytes": 2048, "max_age_s": 3600})
    batches = drain(c)
    assert sorted(s for b in batches for s in b) == list(range(1, 309)), "every row exactly once"
    assert set(range(301, 309)) <= set(batches[0]), "the alarms, then the events, go in the first batch"
    assert len(batches[0]) > 8, "and telemetry fills the rest of it"
    assert all(len(b) < 100 for b in batches), "every batch was cut for size"
