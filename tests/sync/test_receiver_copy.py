"""PostgreSQL: the direct COPY and its ON CONFLICT fallback keep exactly-once under concurrency.

Real PostgreSQL (a fresh schema per test): two receivers writing the same batch at once, and a
batch that meets a reading another transaction holds but has not committed yet.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sync.receiver_db import READING_COLUMNS, PostgresReceiverDB
from sync.wire import Batch, BufferStats, WireReading
from tests.sync.conftest import SITE, pg_schema_url, query


def batch(bid: str, seqs: range) -> Batch:
    rs = [WireReading(seq=s, device=f"m{s % 7}", point="v", ts=float(s), value=s * 0.5) for s in seqs]
    return Batch(site_id=SITE, batch_id=bid, first_seq=seqs[0], last_seq=seqs[-1], created_at=0.0,
                 readings=rs, buffer=BufferStats(depth=len(rs), bytes=0))  # fmt: skip


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema_url() as url:
        yield url


def test_two_receivers_writing_the_same_batches_at_once_store_each_reading_once(pg_url: str) -> None:
    dbs = [PostgresReceiverDB(pg_url) for _ in range(2)]
    # Overlapping batches, as after a reconnect that regroups the backlog: 0-499, 250-749, ...
    batches = [batch(f"b-{k}", range(1 + 250 * k, 501 + 250 * k)) for k in range(12)]
    results: dict[tuple[int, str], tuple[int, int]] = {}
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        for b in batches:
            barrier.wait()
            results[i, b.batch_id] = dbs[i].store_batch(b, f"rx-{i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for db in dbs:
        db.close()
    assert len(results) == 2 * len(batches)
    seen: set[int] = set()
    for b in batches:
        new = set(b.seqs()) - seen
        got = [results[i, b.batch_id] for i in range(2)]
        assert sum(stored for stored, _ in got) == len(new), (b.batch_id, got)
        assert all(stored + dup == 500 for stored, dup in got)
        seen |= new
    assert query(pg_url, "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM readings") == [
        (len(seen), len(seen), 1, max(seen))]


@pytest.mark.parametrize("other_commits", [True, False])
def test_a_batch_waits_for_an_uncommitted_reading_then_counts_it_right(pg_url: str, other_commits: bool) -> None:
    import psycopg

    db = PostgresReceiverDB(pg_url)  # creates the tables
    cols = ", ".join(READING_COLUMNS)
    other = psycopg.connect(pg_url)
    other.execute(
        f"INSERT INTO readings ({cols}) VALUES (%s, 2, 'x', 'v', 2.0, 1.0, NULL, 'float', '', 0, 2, 0, NULL, "
        "'other', 0, 'rx-other', kbe_series(%s, 'x', 'v'))",
        (SITE, SITE),
    )  # open transaction: seq 2 is held, not committed
    out: list[tuple[int, int]] = []
    t = threading.Thread(target=lambda: out.append(db.store_batch(batch("b-1", range(1, 4)), "rx-1")))
    t.start()
    t.join(1.0)
    assert t.is_alive(), "the COPY must wait for the other transaction"
    if other_commits:
        other.commit()
    else:
        other.rollback()
    t.join(30)
    other.close()
    db.close()
    assert out == ([(2, 1)] if other_commits else [(3, 0)])
    expected = [(1, "b-1"), (2, "other" if other_commits else "b-1"), (3, "b-1")]
    assert query(pg_url, "SELECT seq, batch_id FROM readings ORDER BY seq") == expected


def test_a_resend_takes_the_conflict_path_and_stores_nothing_twice(pg_url: str) -> None:
    db = PostgresReceiverDB(pg_url)
    assert db.store_batch(batch("b-1", range(1, 1001)), "rx") == (1000, 0)
    assert db.store_batch(batch("b-1", range(1, 1001)), "rx") == (0, 1000)
    assert db.store_batch(batch("b-2", range(900, 1101)), "rx") == (100, 101)
    db.close()
    assert query(pg_url, "SELECT COUNT(*), SUM(value) FROM readings") == [(1100, sum(s * 0.5 for s in range(1, 1101)))]


def test_a_group_of_batches_is_one_transaction_counted_batch_by_batch(db_url: str) -> None:
    from sync.receiver_db import open_db

    db = open_db(db_url)
    assert db.store_batches([batch("b-1", range(1, 11)), batch("b-2", range(11, 21))], "rx") == [(10, 0), (10, 0)]
    # The same batch twice in one group (a redelivery), and one overlapping what is held: each counted right.
    group = [batch("b-3", range(21, 31)), batch("b-3", range(21, 31)), batch("b-4", range(15, 41))]
    assert db.store_batches(group, "rx") == [(10, 0), (0, 10), (10, 16)]
    db.close()
    assert query(db_url, "SELECT COUNT(*), MIN(seq), MAX(seq), COUNT(DISTINCT batch_id) FROM readings") == [
        (40, 1, 40, 4)]


def test_a_failing_group_stores_nothing(db_url: str) -> None:
    from sync.receiver_db import open_db

    db = open_db(db_url)
    bad = batch("b-2", range(11, 13)).model_copy(update={"site_id": None})  # NOT NULL refuses it
    with pytest.raises(Exception):  # each backend raises its own error type
        db.store_batches([batch("b-1", range(1, 11)), bad], "rx")
    assert db.store_batches([batch("b-1", range(1, 11))], "rx") == [(10, 0)]
    db.close()


def test_a_group_failing_for_a_reason_other_than_its_values_stores_nothing_and_raises_it(db_url: str) -> None:
    from sync.receiver_db import UnstorableError, open_db

    db = open_db(db_url)
    odd = batch("b-2", range(11, 13))
    odd = odd.model_copy(update={"readings": [odd.readings[0].model_copy(update={"meta": {"k": {1}}})]})  # no JSON
    with pytest.raises(TypeError) as failed:  # a bug, not the batch's values: never answered as unstorable
        db.store_batches([batch("b-1", range(1, 11)), odd], "rx")
    assert not isinstance(failed.value, UnstorableError)
    assert db.store_batches([batch("b-1", range(1, 11))], "rx") == [(10, 0)]
    db.close()
    assert query(db_url, "SELECT COUNT(*) FROM readings") == [(10,)]


def test_a_value_the_database_refuses_is_unstorable_and_the_error_names_the_refusal(db_url: str) -> None:
    from sync.receiver_db import UnstorableError, open_db

    db = open_db(db_url)
    bad = batch("b-2", range(11, 13)).model_copy(update={"site_id": None})  # NOT NULL refuses it
    with pytest.raises(UnstorableError) as refused:  # answered as an `unstorable` rejection, this text its detail
        db.store_batches([batch("b-1", range(1, 11)), bad], "rx")
    db.close()
    said = str(refused.value)
    if db_url.startswith("sqlite"):
        assert said.startswith("SQLite refused a value: IntegrityError: NOT NULL constraint failed: readings.site_id")
    else:
        assert said.startswith("PostgreSQL refused a value: NotNullViolation: "), said
        assert '"site_id"' in said, said
