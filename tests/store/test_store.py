"""The SQLite buffer: acceptance, ordering, caps, rejection, migrations, corruption, sequence survival."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.errors import StoreError
from kernel.readings import ClockQuality, Priority, Quality, Reading
from sync.rowcodec import storable
from sync.store import SCHEMA_VERSION, SEQ_BLOCK, Store


def _r(i: int, prio: Priority = Priority.TELEMETRY, value: object = None) -> Reading:
    return Reading(
        "meter-1", f"p{i % 7}", float(i) if value is None else value, 1_700_000_000.0 + i, "V", priority=prio
    )


def test_append_returns_strictly_increasing_seqs_and_reads_back(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", "site-a") as s:
        first = s.append([_r(i) for i in range(10)])
        second = s.append([_r(i) for i in range(10, 15)])
        assert first == list(range(1, 11))
        assert second == list(range(11, 16))
        got = s.pending(100)
        assert [g.seq for g in got] == list(range(1, 16))
        assert got[3].reading == _r(3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.booleans(),
            st.none(),
            st.text(max_size=20),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_values_round_trip_with_their_type(tmp_path_factory: pytest.TempPathFactory, values: list) -> None:
    path = tmp_path_factory.mktemp("rt") / "s.db"
    with Store(path, "site-a") as s:
        readings = [
            Reading("d", "p", v, 1.5, "u", Quality.UNCERTAIN, Priority.EVENT, ClockQuality.RTC, {"k": "v"})
            for v in values
        ]
        s.append(readings)
        back = [x.reading for x in s.pending(100)]
        assert [type(b.value) for b in back] == [type(v) for v in values]
        # A NUL (which the centre cannot store) comes back as U+FFFD: tests/store/test_nul_text.py.
        assert back == [dataclasses.replace(r, value=storable(r.value)) if isinstance(r.value, str) else r
                        for r in readings]
        assert back[0].meta == {"k": "v"}


def test_sequence_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path, "site-a") as s:
        s.append([_r(i) for i in range(5)])
        s.ack([1, 2, 3, 4, 5])
    with Store(path, "site-a") as s:
        assert s.append([_r(0)]) == [6]


def test_sequence_survives_losing_the_database(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path, "site-a") as s:
        seqs = s.append([_r(i) for i in range(5)])
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    with Store(path, "site-a") as s:
        new = s.append([_r(0)])
    assert new[0] > seqs[-1]
    assert new[0] > SEQ_BLOCK - 1


def test_pending_orders_by_priority_class(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(0), _r(1, Priority.ALARM), _r(2), _r(3, Priority.EVENT)])
        alarms = s.pending(10, priority=Priority.ALARM)
        assert [a.seq for a in alarms] == [2]
        assert [x.seq for x in s.pending(10, priority=Priority.TELEMETRY)] == [1, 3]
        assert [x.seq for x in s.newest(1)] == [3]
        assert [x.seq for x in s.pending(10, after_seq=2)] == [3, 4]


def test_ack_removes_only_named_rows_and_updates_depth(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(i) for i in range(10)])
        assert s.ack([2, 4, 99]) == 2
        assert s.stats().depth == 8
        assert [x.seq for x in s.fetch([1, 2, 3, 4])] == [1, 3]
        assert s.ack([2, 4]) == 0


@settings(max_examples=40, deadline=None)
@given(
    prios=st.lists(st.sampled_from(Priority), min_size=1, max_size=120),
    picks=st.lists(st.booleans(), min_size=120, max_size=120),
    reject=st.booleans(),
)
def test_ack_and_reject_remove_exactly_the_named_rows_whether_runs_or_scattered(
    tmp_path_factory: pytest.TempPathFactory, prios: list[Priority], picks: list[bool], reject: bool
) -> None:
    """Runs of consecutive seqs go as one range, the rest by name: either way exactly the named rows
    leave (interleaved classes and missing seqs included), and the depth per class stays right."""
    with Store(tmp_path_factory.mktemp("ack") / "s.db", "site-a") as s:
        seqs = s.append([_r(i, p) for i, p in enumerate(prios)])
        named = [q for q, keep in zip(seqs, picks, strict=False) if keep] + [seqs[-1] + 5]  # one never stored
        gone = len(named) - 1
        if reject:
            assert s.reject(named, "b-1", "bad") == gone
            assert [x.seq for x in s.rejected_readings("b-1")] == named[:-1]
        else:
            assert s.ack(named) == gone
        left = [x.seq for x in s.pending(1000)]
        assert sorted(left) == sorted(set(seqs) - set(named))
        by_prio = {p: sum(1 for q, pp in zip(seqs, prios, strict=True) if pp == p and q not in named) for p in Priority}
        assert s.stats().depth_by_priority == by_prio


def test_cap_drops_oldest_telemetry_only_and_counts(tmp_path: Path) -> None:
    cap = 1024 * 1024
    rng = random.Random(7)  # values that do not compress away: the store keeps rows zlib-packed
    with Store(tmp_path / "s.db", "site-a", max_bytes=cap) as s:
        alarm_seqs: list[int] = []
        for batch in range(60):
            readings = [_r(batch * 1000 + i, value=rng.randbytes(100).hex()) for i in range(300)]
            s.append(readings)
            alarm_seqs += s.append([_r(batch, Priority.ALARM)])
        st_ = s.stats()
        assert st_.bytes_used <= cap
        assert st_.dropped[Priority.TELEMETRY] > 0
        assert st_.dropped[Priority.ALARM] == 0
        assert [a.seq for a in s.pending(1000, priority=Priority.ALARM)] == alarm_seqs
        telemetry = s.pending(100_000, priority=Priority.TELEMETRY)
        # What is left is the newest telemetry: a contiguous tail, nothing missing in the middle.
        kept = [t.seq for t in telemetry]
        total_telemetry = 60 * 300
        assert len(kept) + st_.dropped[Priority.TELEMETRY] == total_telemetry
        assert kept[-1] == s.stats().last_seq - 1
        assert s.counters()["dropped_telemetry"] == st_.dropped[Priority.TELEMETRY]


def test_reject_keeps_rows_aside(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(i) for i in range(6)])
        assert s.reject([1, 2, 3], "b-1", "bad signature") == 3
        assert s.stats().depth == 3
        assert s.stats().rejected == 3
        (batch,) = s.rejected_batches()
        assert (batch.batch_id, batch.reason, batch.count, batch.first_seq, batch.last_seq) == (
            "b-1",
            "bad signature",
            3,
            1,
            3,
        )
        assert abs(batch.rejected_at - time.time()) < 600
        assert [x.reading for x in s.rejected_readings("b-1")] == [_r(0), _r(1), _r(2)]


def test_corrupt_file_is_quarantined_and_store_starts(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path, "site-a") as s:
        s.append([_r(i) for i in range(100)])
    data = bytearray(path.read_bytes())
    data[0:16] = b"this is garbage!"
    path.write_bytes(bytes(data))
    with Store(path, "site-a") as s:
        assert len(s.quarantined) == 1
        assert s.quarantined[0].exists()
        assert s.quarantined[0].read_bytes()[:16] == b"this is garbage!"
        seqs = s.append([_r(0)])
        assert seqs[0] > 100
        assert s.stats().quarantined == 1


def test_store_refuses_another_sites_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path, "site-a").close()
    with pytest.raises(StoreError, match="belongs to site 'site-a'"):
        Store(path, "site-b")


def test_migrations_record_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path, "site-a").close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this agent"):
        Store(path, "site-a")


def test_store_is_durable_by_configuration(tmp_path: Path) -> None:
    """Accepted means on disk: WAL journal (a crash mid-write leaves the last commit whole) and
    synchronous=FULL (the commit is fsynced before append returns)."""
    path = tmp_path / "s.db"
    with Store(path, "site-a") as s:
        s.append([_r(1)])
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        other = sqlite3.connect(path)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()


def _fill_to_disk_limit(s: Store) -> None:
    """Make the next append hit 'database or disk is full', as a full SD card does."""
    pages = s._db.execute("PRAGMA page_count").fetchone()[0]
    s._db.execute(f"PRAGMA max_page_count = {pages}")


def test_disk_full_drops_oldest_telemetry_then_accepts(tmp_path: Path) -> None:
    """On a full disk the store gives up its oldest telemetry (counted), keeps alarms and events,
    and still accepts the new readings in a clean transaction."""
    with Store(tmp_path / "s.db", "site-a", max_bytes=1 << 30) as s:
        alarms = s.append([_r(i, Priority.ALARM) for i in range(5)])
        events = s.append([_r(i, Priority.EVENT) for i in range(5)])
        rng = random.Random(8)  # values that do not compress away: the store keeps rows zlib-packed
        s.append([_r(i, value=rng.randbytes(100).hex()) for i in range(3000)])
        _fill_to_disk_limit(s)
        new = s.append([_r(i, Priority.ALARM, value=rng.randbytes(100).hex()) for i in range(50)])
        assert len(new) == 50
        assert new[0] == s.stats().last_seq - 49
        dropped = s.stats().dropped
        assert dropped[Priority.TELEMETRY] >= 1000
        assert dropped[Priority.ALARM] == 0
        assert dropped[Priority.EVENT] == 0
        assert s.counters()["dropped_telemetry"] == dropped[Priority.TELEMETRY]
        left = s.pending(100_000, priority=Priority.TELEMETRY)
        assert left[0].seq == alarms[-1] + len(events) + dropped[Priority.TELEMETRY] + 1  # oldest went first
        assert [r.seq for r in s.pending(100, priority=Priority.EVENT)] == events
        assert [r.seq for r in s.pending(100, priority=Priority.ALARM)] == alarms + new
        assert s.stats().depth == 5 + 5 + (3000 - dropped[Priority.TELEMETRY]) + 50


def test_disk_full_with_nothing_to_drop_refuses_and_stays_usable(tmp_path: Path) -> None:
    """With only alarms left a full disk refuses the append (nothing accepted, clear message), the
    failed transaction is rolled back, and the store works again once space returns."""
    with Store(tmp_path / "s.db", "site-a", max_bytes=1 << 30) as s:
        rng = random.Random(9)
        s.append([_r(i, Priority.ALARM, value=rng.randbytes(100).hex()) for i in range(200)])
        _fill_to_disk_limit(s)
        before = s.stats()
        with pytest.raises(StoreError, match="full"):
            s.append([_r(i, Priority.ALARM, value=rng.randbytes(100).hex()) for i in range(200)])
        after = s.stats()
        assert after.depth == before.depth
        assert after.last_seq == before.last_seq
        s._db.execute("PRAGMA max_page_count = 1073741823")
        seqs = s.append([_r(1, Priority.ALARM)])
        assert seqs == [before.last_seq + 1]


def test_drop_spills_from_telemetry_into_events_but_never_alarms(tmp_path: Path) -> None:
    """When telemetry cannot free enough, the rest comes from the oldest events: exactly what is
    missing, counted per class; alarms are never dropped."""
    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(i, Priority.EVENT) for i in range(10)])
        s.append([_r(i) for i in range(4)])
        s.append([_r(i, Priority.ALARM) for i in range(3)])
        assert s._drop_oldest(7, reason="disk_full") == 7
        st_ = s.stats()
        assert st_.dropped[Priority.TELEMETRY] == 4
        assert st_.dropped[Priority.EVENT] == 3
        assert st_.dropped[Priority.ALARM] == 0
        assert st_.depth_by_priority[Priority.EVENT] == 7
        assert st_.depth_by_priority[Priority.TELEMETRY] == 0
        assert st_.depth == 10
        assert [r.seq for r in s.pending(100, priority=Priority.EVENT)] == list(range(4, 11))
        assert s._drop_oldest(100, reason="cap") == 7
        assert s.stats().depth_by_priority[Priority.ALARM] == 3
    with Store(tmp_path / "s.db", "site-a") as s:  # counted for good, not only in memory
        assert s.stats().dropped[Priority.EVENT] == 10
        assert s.stats().dropped[Priority.TELEMETRY] == 4


def test_failure_inside_a_transaction_accepts_nothing_and_leaves_the_store_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error between INSERT and COMMIT rolls the whole append back; the next append works."""
    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(0)])
        import sync.store as store_mod

        def failing_set_last_seq(db: sqlite3.Connection, seq: int) -> None:
            raise sqlite3.OperationalError("injected I/O error")  # after the INSERT, before COMMIT

        monkeypatch.setattr(store_mod, "_set_last_seq", failing_set_last_seq)
        with pytest.raises(StoreError, match="injected"):
            s.append([_r(i) for i in range(1, 4)])
        monkeypatch.undo()
        assert s.stats().depth == 1
        assert [r.seq for r in s.pending(10)] == [1]
        assert s.append([_r(9)]) == [2]


def test_runs_keep_every_seq_once() -> None:
    from sync.store import _runs

    assert _runs([]) == []
    assert _runs(list(range(5, 2005))) == [(5, 2004)]
    assert _runs([1, 2, 5]) == [(1, 2), (5, 5)]  # a gap of two: not one run
    seqs = [*range(1, 11), 20, 22, *range(30, 38), 40]
    assert _runs(seqs) == [(1, 10), (20, 20), (22, 22), (30, 37), (40, 40)]


def test_tools_beside_the_agent_see_what_the_store_holds(tmp_path: Path) -> None:
    """``edge-agent store`` and the commissioning check read the file without the agent's Store:
    the summary, the batches set aside and their readings, every waiting reading, the reasons."""
    from sync.store import StoreFile, rejected_reasons, stored_readings

    path = tmp_path / "s.db"
    with Store(path, "site-a") as s:
        s.append([_r(i) for i in range(6)])  # seqs 1..6
        s.append([_r(6, Priority.ALARM), _r(7, Priority.EVENT)])  # 7, 8
        s.reject([2, 3], "b-1", "bad signature")
        s.reject([5], "b-2", "malformed")
        assert s._drop_oldest(1, reason="cap") == 1  # seq 1
    db = sqlite3.connect(path)
    try:
        assert [(x.seq, x.reading) for x in stored_readings(db)] == [
            (4, _r(3)), (6, _r(5)), (7, _r(6, Priority.ALARM)), (8, _r(7, Priority.EVENT))]
        assert rejected_reasons(db) == {2: "bad signature", 3: "bad signature", 5: "malformed"}
        size = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    sf = StoreFile(path)
    try:
        assert sf.summary() == {
            "path": str(path),
            "waiting": 4,
            "waiting_by_priority": {"telemetry": 2, "alarm": 1, "event": 1},
            "oldest_waiting_ts": _r(3).ts,
            "last_seq": 8,
            "bytes": size,
            "dropped": {"telemetry": 1},
            "rejected_readings": 3,
            "rejected_batches": 2,
        }
        assert [(b.batch_id, b.count, b.reason) for b in sf.rejected_batches()] == [
            ("b-1", 2, "bad signature"), ("b-2", 1, "malformed")]
        assert [(x.seq, x.reading) for x in sf.rejected_readings("b-1")] == [(2, _r(1)), (3, _r(2))]
        assert [x.seq for x in sf.rejected_readings("b-1", limit=1)] == [2]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            sf.resend(["b-1"])  # opened to read: the tool cannot change the file
    finally:
        sf.close()
    with pytest.raises(StoreError, match=r"other\.db' does not exist"):
        StoreFile(tmp_path / "other.db")
    (tmp_path / "torn.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)  # a store's header, then garbage
    with pytest.raises(StoreError, match=r"torn\.db: cannot open the store: file is not a database"):
        StoreFile(tmp_path / "torn.db")
    (tmp_path / "notes.db").write_text("not a database\n")
    with pytest.raises(StoreError, match="not an agent store"):
        StoreFile(tmp_path / "notes.db")


def test_a_corrupt_file_is_moved_aside_with_its_wal_under_a_utc_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The corrupt file and its -wal/-shm go aside together as ``<name>.corrupt-<UTC time>-<pid>``
    (docs/operations.md): a stale WAL left beside the fresh file would be replayed into it."""
    import os
    import re

    path = tmp_path / "s.db"
    with Store(path, "site-a") as s:
        s.append([_r(i) for i in range(100)])
    data = bytearray(path.read_bytes())
    data[0:16] = b"this is garbage!"
    path.write_bytes(bytes(data))
    Path(str(path) + "-wal").write_bytes(b"old wal")
    Path(str(path) + "-shm").write_bytes(b"old shm")
    monkeypatch.setenv("TZ", "Asia/Ho_Chi_Minh")  # the stamp is UTC whatever the local zone
    time.tzset()
    try:
        before = time.gmtime()
        with Store(path, "site-a") as s:
            (target,) = s.quarantined
            assert len(s.pending(1000)) == 0  # nothing of the old WAL replayed into the fresh file
    finally:
        monkeypatch.undo()
        time.tzset()
    m = re.fullmatch(r"s\.db\.corrupt-(\d{8}T\d{6}Z)-(\d+)", target.name)
    assert m is not None
    assert m.group(2) == str(os.getpid())
    stamp = time.strptime(m.group(1), "%Y%m%dT%H%M%SZ")
    assert abs(time.mktime(stamp) - time.mktime(before)) < 120
    assert target.read_bytes()[:16] == b"this is garbage!"
    assert Path(str(target) + "-wal").read_bytes() == b"old wal"
    assert Path(str(target) + "-shm").exists()  # SQLite rewrites the index while opening: moved all the same


def test_newest_gives_the_newest_readings_above_a_seq_newest_first(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(0)])
        assert [(x.seq, x.reading) for x in s.newest(5)] == [(1, _r(0))]
        s.append([_r(i) for i in range(1, 10)])  # seqs 2..10, one row
        assert [(x.seq, x.reading) for x in s.newest(3)] == [(10, _r(9)), (9, _r(8)), (8, _r(7))]
        assert [x.seq for x in s.newest(100, above_seq=4)] == [10, 9, 8, 7, 6, 5]
        assert [x.seq for x in s.newest(2, above_seq=8)] == [10, 9]
        assert s.newest(5, priority=Priority.ALARM) == []


def test_a_resend_by_the_tool_is_noticed_once_and_the_depth_recounted(tmp_path: Path) -> None:
    from sync.store import StoreFile

    path = tmp_path / "s.db"
    with Store(path, "site-a") as s:
        assert not s.resend_requested()  # a new store: no resend yet
        s.append([_r(i) for i in range(5)])
        s.reject([2, 3], "b-1", "bad signature")
        s.reject([5], "b-2", "bad signature")
        assert not s.resend_requested()
        assert s.depth() == 2
        sf = StoreFile(path, write=True)
        try:
            assert sf.resend(["b-1", "b-2"]) == 3
        finally:
            sf.close()
        assert s.resend_requested()
        assert s.depth() == 5
        assert s.stats().depth_by_priority[Priority.TELEMETRY] == 5
        assert not s.resend_requested()  # once
        assert s.stats().rejected == 0


def test_a_resend_on_a_full_disk_changes_nothing_and_says_so(tmp_path: Path) -> None:
    """The tool's resend is one transaction: on a full disk it is rolled back whole (the batch stays
    aside, nothing is queued twice) and the error is the disk's."""
    from sync.store import StoreFile

    path = tmp_path / "s.db"
    rng = random.Random(10)
    with Store(path, "site-a") as s:
        s.append([_r(i, value=rng.randbytes(100).hex()) for i in range(3000)])
        s.reject(list(range(1, 3001)), "b-1", "bad")
    vacuum = sqlite3.connect(path)
    vacuum.execute("VACUUM")  # no free pages left: putting the rows back needs new ones
    vacuum.close()
    sf = StoreFile(path, write=True)
    try:
        pages = sf._db.execute("PRAGMA page_count").fetchone()[0]
        sf._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            sf.resend(["b-1"])
        assert not sf._db.in_transaction
        assert sf.summary()["waiting"] == 0
        assert sf.summary()["rejected_readings"] == 3000
    finally:
        sf.close()


def test_drops_end_exactly_where_asked_and_are_counted_per_class_and_reason(tmp_path: Path) -> None:
    """A drop that ends on a row boundary takes that row and no more; one that needs a single event
    takes it; the metric counts each class and reason apart."""
    from kernel.metrics import Metrics

    metrics = Metrics()
    with Store(tmp_path / "s.db", "site-a", metrics=metrics) as s:
        s.append([_r(i) for i in range(4)])  # telemetry 1..4, one row
        s.append([_r(i) for i in range(4, 8)])  # telemetry 5..8
        s.append([_r(i, Priority.EVENT) for i in range(3)])  # events 9..11
        assert s._drop_oldest(4, reason="cap") == 4
        assert [r.seq for r in s.pending(100, priority=Priority.TELEMETRY)] == [5, 6, 7, 8]
        assert s._drop_oldest(5, reason="disk_full") == 5
        assert [r.seq for r in s.pending(100, priority=Priority.EVENT)] == [10, 11]
        assert s.stats().depth_by_priority == {Priority.ALARM: 0, Priority.EVENT: 2, Priority.TELEMETRY: 0}
    series = metrics.series("kbe_store_dropped_total")
    assert series == {
        (("priority", "telemetry"), ("reason", "cap")): 4,
        (("priority", "telemetry"), ("reason", "disk_full")): 4,
        (("priority", "event"), ("reason", "disk_full")): 1,
    }


def test_a_failed_drop_is_rolled_back_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sync.store as store_mod

    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(i) for i in range(10)])

        def failing_bump(db: sqlite3.Connection, name: str, amount: int) -> None:
            raise sqlite3.OperationalError("injected I/O error")  # after the DELETE, before COMMIT

        monkeypatch.setattr(store_mod, "_bump", failing_bump)
        with pytest.raises(sqlite3.OperationalError, match="injected"):
            s._drop_oldest(3, reason="cap")
        monkeypatch.undo()
        assert not s._db.in_transaction
        assert [r.seq for r in s.pending(100)] == list(range(1, 11))
        assert s.stats().depth == 10
        assert s._drop_oldest(3, reason="cap") == 3
        assert s.stats().dropped[Priority.TELEMETRY] == 3


def test_chunks_stop_once_they_hold_the_readings_asked_for(tmp_path: Path) -> None:
    """The uplink reads whole rows until they hold ``limit`` readings past ``after_seq`` (counting
    only the part of the first row past it), and no row more."""
    with Store(tmp_path / "s.db", "site-a") as s:
        for k in range(4):
            s.append([_r(5 * k + i) for i in range(5)])  # rows 1..5, 6..10, 11..15, 16..20
        cases = {(5, 0): [1], (6, 0): [1, 6], (10, 0): [1, 6], (12, 0): [1, 6, 11], (4, 3): [1, 6], (2, 3): [1]}
        for (limit, after), firsts in cases.items():
            assert [c[0] for c in s.pending_chunks(limit, after, Priority.TELEMETRY)] == firsts, (limit, after)
        assert [c[0] for c in s.newest_chunks(6, Priority.TELEMETRY, 0)] == [16, 11]
        assert [c[0] for c in s.newest_chunks(5, Priority.TELEMETRY, 0)] == [16]


def test_the_store_counts_accepted_acked_and_rejected_readings(tmp_path: Path) -> None:
    from kernel.metrics import Metrics

    metrics = Metrics()
    with Store(tmp_path / "s.db", "site-a", metrics=metrics) as s:
        s.append([_r(i) for i in range(10)])
        assert s.ack([1, 2, 3, 99]) == 3
        assert s.reject([4, 5], "b-1", "bad") == 2
        assert (s.ack([]), s.reject([], "b-2", "bad")) == (0, 0)  # nothing named: nothing removed
        assert [b.batch_id for b in s.rejected_batches()] == ["b-1"]
    assert metrics.get("kbe_store_accepted_total") == 10
    assert metrics.get("kbe_store_acked_total") == 3
    assert metrics.get("kbe_store_rejected_total") == 2


def test_a_failed_reject_is_rolled_back_whole_and_the_depth_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sync.store as store_mod

    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(i) for i in range(10)])

        def failing_bump(db: sqlite3.Connection, name: str, amount: int) -> None:
            raise sqlite3.OperationalError("injected I/O error")  # after the DELETEs, before COMMIT

        monkeypatch.setattr(store_mod, "_bump", failing_bump)
        with pytest.raises(sqlite3.OperationalError, match="injected"):
            s.reject([2, 3, 4], "b-1", "bad")
        monkeypatch.undo()
        assert not s._db.in_transaction
        assert [r.seq for r in s.pending(100)] == list(range(1, 11))
        assert s.stats().depth_by_priority[Priority.TELEMETRY] == 10
        assert s.rejected_batches() == []
        assert s.reject([2, 3, 4], "b-1", "bad") == 3


def test_stats_of_a_new_store(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", "site-a", max_bytes=1 << 20) as s:
        st_ = s.stats()
        assert (st_.depth, st_.rejected, st_.quarantined, st_.oldest_ts, st_.max_bytes) == (0, 0, 0, None, 1 << 20)
        assert st_.fill == st_.bytes_used / (1 << 20) > 0
        assert st_.dropped == dict.fromkeys(Priority, 0)


def test_pending_inside_one_row_starts_after_the_seq_and_stops_at_the_limit(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", "site-a") as s:
        s.append([_r(i) for i in range(5)])  # one row, seqs 1..5
        assert [x.seq for x in s.pending(10, after_seq=2)] == [3, 4, 5]
        assert [x.seq for x in s.pending(2)] == [1, 2]


def _telemetry_then_events(s: Store, telemetry: int, events: int) -> tuple[list[int], list[int]]:
    """Fill a store with ``telemetry`` readings that do not compress away, then ``events``."""
    rng = random.Random(12)
    t = s.append([_r(i, value=rng.randbytes(100).hex()) for i in range(telemetry)])
    e = s.append([_r(i, Priority.EVENT) for i in range(events)])
    return t, e


@pytest.mark.parametrize(("new", "dropped"), [(50, 1000), (1200, 1200)])
def test_a_full_disk_drops_at_least_a_thousand_oldest_telemetry_counted_as_disk_full(
    tmp_path: Path, new: int, dropped: int
) -> None:
    """A full disk frees room for the append with one drop of the oldest telemetry: as many readings
    as the append holds, and never fewer than 1,000 (so a full disk is not hit again on the next
    poll); the drop is counted under ``reason="disk_full"``, the series operators alert on, apart
    from the byte cap's ``reason="cap"``. Events and alarms are not touched."""
    from kernel.metrics import Metrics

    metrics = Metrics()
    with Store(tmp_path / "s.db", "site-a", max_bytes=1 << 30, metrics=metrics) as s:
        telemetry, events = _telemetry_then_events(s, 1500, 5)
        _fill_to_disk_limit(s)
        seqs = s.append([_r(i, Priority.ALARM, value="x" * 20) for i in range(new)])
        assert len(seqs) == new
        st_ = s.stats()
        assert st_.dropped == {Priority.ALARM: 0, Priority.EVENT: 0, Priority.TELEMETRY: dropped}
        assert [r.seq for r in s.pending(2000, priority=Priority.TELEMETRY)] == telemetry[dropped:]
        assert [r.seq for r in s.pending(100, priority=Priority.EVENT)] == events
    assert metrics.series("kbe_store_dropped_total") == {
        (("priority", "telemetry"), ("reason", "disk_full")): dropped
    }


def test_a_full_disk_that_drops_cannot_relieve_is_tried_three_times_then_refused(tmp_path: Path) -> None:
    """When dropping telemetry does not free enough, the append is tried exactly three times (a drop
    before the second and the third), then refused with the disk's own message; nothing is
    accepted and the alarms stay."""
    from kernel.metrics import Metrics

    metrics = Metrics()
    rng = random.Random(13)
    with Store(tmp_path / "s.db", "site-a", max_bytes=1 << 30, metrics=metrics) as s:
        alarms = s.append([_r(i, Priority.ALARM, value=rng.randbytes(100).hex()) for i in range(200)])
        s.append([_r(i) for i in range(10)])
        _fill_to_disk_limit(s)
        attempts = 0
        append_locked = s._append_locked

        def counted(readings: list[Reading], tails: list[str]) -> list[int]:
            nonlocal attempts
            attempts += 1
            return append_locked(readings, tails)

        s._append_locked = counted  # type: ignore[method-assign]
        with pytest.raises(StoreError, match=r"cannot commit readings to .*s\.db: .*full"):
            s.append([_r(i, Priority.ALARM, value=rng.randbytes(100).hex()) for i in range(200)])
        assert attempts == 3
        assert s.stats().dropped[Priority.TELEMETRY] == 10
        assert [r.seq for r in s.pending(1000)] == alarms
    assert metrics.series("kbe_store_dropped_total") == {(("priority", "telemetry"), ("reason", "disk_full")): 10}


def test_a_store_at_exactly_its_byte_cap_keeps_everything_and_one_byte_less_drops(tmp_path: Path) -> None:
    """``store.max_bytes`` is the most the data may use: a store that reaches exactly its cap drops
    nothing; only a store past it drops its oldest telemetry. The size of one append is measured
    first in a store without a cap (the same readings give the same pages)."""
    rng_seed = 11

    def readings() -> list[Reading]:
        rng = random.Random(rng_seed)
        return [_r(i, value=rng.randbytes(100).hex()) for i in range(300)]

    with Store(tmp_path / "free.db", "site-a") as s:
        s.append(readings())
        used = s.bytes_used()
    with Store(tmp_path / "at-cap.db", "site-a", max_bytes=used) as s:
        s.append(readings())
        assert s.bytes_used() == used
        assert (s.depth(), s.stats().dropped[Priority.TELEMETRY]) == (300, 0)
    with Store(tmp_path / "past-cap.db", "site-a", max_bytes=used - 1) as s:
        s.append(readings())
        dropped = s.stats().dropped[Priority.TELEMETRY]
        assert dropped > 0
        assert s.depth() == 300 - dropped


def _readings_300(seed: int = 11) -> list[Reading]:
    rng = random.Random(seed)  # values that do not compress away: the store keeps rows zlib-packed
    return [_r(i, value=rng.randbytes(100).hex()) for i in range(300)]


def test_a_cap_drop_frees_the_excess_over_95_percent_of_the_cap_counted_as_cap(tmp_path: Path) -> None:
    """Past its cap the store drops, in readings of its average stored size, what the data uses
    above 95 % of the cap, plus one (so the next append does not hit the cap again), counted under
    ``reason="cap"``; the over-cap gauge stays unset while telemetry can be dropped."""
    from kernel.metrics import Metrics

    with Store(tmp_path / "free.db", "site-a") as s:
        s.append(_readings_300())
        used = s.bytes_used()
    cap = used - 1
    want = int((used - int(cap * 0.95)) / (used / 300)) + 1
    metrics = Metrics()
    with Store(tmp_path / "s.db", "site-a", max_bytes=cap, metrics=metrics) as s:
        s.append(_readings_300())
        assert s.stats().dropped[Priority.TELEMETRY] == want
        assert [r.seq for r in s.pending(1000)] == list(range(want + 1, 301))
    assert metrics.series("kbe_store_dropped_total") == {(("priority", "telemetry"), ("reason", "cap")): want}
    assert metrics.series("kbe_store_over_cap") == {}


def test_a_store_over_its_cap_with_only_alarms_keeps_them_and_says_so(tmp_path: Path) -> None:
    """Alarms are never dropped: a store past its cap with nothing else sets ``kbe_store_over_cap``
    to 1 and keeps every alarm."""
    from kernel.metrics import Metrics

    metrics = Metrics()
    rng = random.Random(14)
    with Store(tmp_path / "s.db", "site-a", max_bytes=64 * 1024, metrics=metrics) as s:
        seqs = s.append([_r(i, Priority.ALARM, value=rng.randbytes(100).hex()) for i in range(600)])
        assert s.bytes_used() > 64 * 1024
        assert [r.seq for r in s.pending(1000)] == seqs
        assert s.stats().dropped == dict.fromkeys(Priority, 0)
    assert metrics.series("kbe_store_over_cap") == {(): 1}
    assert metrics.series("kbe_store_dropped_total") == {}


def test_over_cap_is_said_once_and_cleared_when_the_alarms_leave(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The over-cap gauge and its warning belong to an episode: one warning however many commits
    land over the cap, and the gauge back to 0 once delivered alarms free the space."""
    from kernel.metrics import Metrics

    caplog.set_level("INFO", logger="kbe.store")
    metrics = Metrics()
    rng = random.Random(15)
    with Store(tmp_path / "s.db", "site-a", max_bytes=64 * 1024, metrics=metrics) as s:
        seqs = s.append([_r(i, Priority.ALARM, value=rng.randbytes(100).hex()) for i in range(600)])
        for i in range(5):
            seqs += s.append([_r(600 + i, Priority.ALARM, value=rng.randbytes(100).hex())])
        assert metrics.series("kbe_store_over_cap") == {(): 1}
        warned = [r for r in caplog.records if "over its cap" in r.getMessage()]
        assert len(warned) == 1
        s.ack(seqs)  # the centre has them all: their pages are free again
        s.append([_r(0)])
        assert s.bytes_used() <= 64 * 1024
        assert metrics.series("kbe_store_over_cap") == {(): 0}
        assert any("back under its cap" in r.getMessage() for r in caplog.records)
        # A second episode is a new one: it is warned about again, and its end said again.
        s.append([_r(700 + i, Priority.ALARM, value=rng.randbytes(100).hex()) for i in range(600)])
        s.append([_r(1300, Priority.ALARM, value=rng.randbytes(100).hex())])  # the telemetry is gone
        assert metrics.series("kbe_store_over_cap") == {(): 1}
        assert len([r for r in caplog.records if "over its cap" in r.getMessage()]) == 2
        s.ack([r.seq for r in s.pending(10_000)])
        s.append([_r(1)])
        assert metrics.series("kbe_store_over_cap") == {(): 0}
        assert len([r for r in caplog.records if "back under its cap" in r.getMessage()]) == 2


def test_a_new_store_hands_out_seq_1_first_even_beside_an_empty_reservation_file(tmp_path: Path) -> None:
    """A first start (no ``.seq`` file, or an empty one) begins at seq 1, and the store's folder is
    made, parents included."""
    with Store(tmp_path / "new" / "deeper" / "s.db", "site-a") as s:
        assert s.append([_r(i) for i in range(3)]) == [1, 2, 3]
    (tmp_path / "b.db.seq").write_text("")
    with Store(tmp_path / "b.db", "site-a") as s:
        assert s.append([_r(1)]) == [1]
    (tmp_path / "c.db.seq").write_text("garbage\n")  # unreadable: the database alone decides
    with Store(tmp_path / "c.db", "site-a") as s:
        assert s.append([_r(1)]) == [1]


def test_someone_elses_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A file that is not SQLite and has no ``.seq`` beside it is not a corrupt store of ours: the
    store refuses it, saying why, and neither moves nor changes it."""
    path = tmp_path / "notes.db"
    path.write_text("not a database\n")
    with pytest.raises(StoreError, match=r"notes\.db.*not an agent store"):
        Store(path, "site-a")
    assert path.read_text() == "not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_failed_migration_is_rolled_back_and_raises_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails leaves the file at the version before it, with nothing half done, and
    the caller sees the migration's own error."""
    import sync.store as store_mod
    from sync.store_schema import MIGRATIONS

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        raise sqlite3.OperationalError("injected migration failure")

    monkeypatch.setattr(store_mod, "MIGRATIONS", [MIGRATIONS[0], broken])
    db = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="injected migration failure"):
            Store._migrate(db)
        assert not db.in_transaction
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half_done" not in tables
        assert "meta" in tables
    finally:
        db.close()


def test_close_checkpoints_the_wal_into_the_database_even_with_a_reader_open(tmp_path: Path) -> None:
    """Closing the store moves what its WAL holds into the database file and truncates the WAL,
    also while a tool beside the agent keeps the file open (SQLite itself then leaves the WAL)."""
    path = tmp_path / "s.db"
    s = Store(path, "site-a")
    s.append(_readings_300())
    reader = sqlite3.connect(path)
    try:
        reader.execute("SELECT COUNT(*) FROM polls").fetchone()
        wal = Path(str(path) + "-wal")
        assert wal.stat().st_size > 0
        s.close()
        assert wal.stat().st_size == 0
    finally:
        reader.close()


def test_a_store_over_its_cap_with_events_drops_them_and_is_not_over_cap(tmp_path: Path) -> None:
    """With no telemetry left, the cap takes the oldest events; the store is then back under its
    cap, so the over-cap gauge stays unset."""
    from kernel.metrics import Metrics

    metrics = Metrics()
    rng = random.Random(15)
    with Store(tmp_path / "s.db", "site-a", max_bytes=64 * 1024, metrics=metrics) as s:
        s.append([_r(i, Priority.EVENT, value=rng.randbytes(100).hex()) for i in range(600)])
        assert s.stats().dropped[Priority.EVENT] > 0
    assert metrics.series("kbe_store_over_cap") == {}
