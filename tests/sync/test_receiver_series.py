"""The centre's series key: Python and SQL agree, the receiver stores it, a query by point uses its index.

Real PostgreSQL (a fresh schema per test) and real SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sync.receiver_db import PostgresReceiverDB, SqliteReceiverDB, open_db
from sync.receiver_series import SeriesCache, register_sqlite, series_of
from sync.wire import Batch, BufferStats, WireReading
from tests.sync.conftest import SITE, pg_schema_url, query

# Names as the wire allows them: any text without NUL; lone surrogates cannot be UTF-8, so none.
_names = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)


@pytest.fixture(scope="module")
def pg_conn() -> Iterator[object]:
    import psycopg

    with pg_schema_url() as url:
        PostgresReceiverDB(url).close()  # creates kbe_series in the schema
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn


@pytest.fixture(scope="module")
def lite() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    register_sqlite(db)
    yield db
    db.close()


def test_the_key_is_the_documented_one_and_never_changes() -> None:
    import hashlib

    device_half = hashlib.sha256(b"a\0b").digest()[:4]
    point_half = hashlib.sha256(b"a\0b\0c").digest()[:4]
    assert series_of("a", "b", "c") == int.from_bytes(device_half + point_half, "big", signed=True)
    assert series_of("bn-01", "meter-1", "v") == 6189839903232698133  # pinned: stored keys must stay valid
    assert series_of("ab", "", "c") != series_of("a", "b", "c")  # the separator keeps the fields apart


def test_the_points_of_a_device_share_the_high_half_of_their_keys() -> None:
    keys = {series_of("bn-01", "meter-1", f"k{i}") for i in range(50)}
    assert len(keys) == 50
    assert len({k >> 32 for k in keys}) == 1  # side by side in the index
    assert series_of("bn-01", "meter-2", "k0") >> 32 != series_of("bn-01", "meter-1", "k0") >> 32
    assert series_of("bn-02", "meter-1", "k0") >> 32 != series_of("bn-01", "meter-1", "k0") >> 32


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(_names, _names, _names)
@example("", "", "")
@example("bn-01", "đồng hồ-1", "nhiệt độ µg/m³")
@example("😀", "\U0010ffff", "\x7f\x01")
def test_python_postgresql_and_sqlite_agree(pg_conn, lite: sqlite3.Connection, site: str, device: str, point: str) -> None:
    want = series_of(site, device, point)
    assert pg_conn.execute("SELECT kbe_series(%s, %s, %s)", (site, device, point)).fetchone()[0] == want
    assert lite.execute("SELECT kbe_series(?, ?, ?)", (site, device, point)).fetchone()[0] == want
    assert -(2**63) <= want < 2**63


def test_null_in_gives_null_out(pg_conn, lite: sqlite3.Connection) -> None:
    assert pg_conn.execute("SELECT kbe_series(NULL, 'd', 'p')").fetchone()[0] is None
    assert lite.execute("SELECT kbe_series(NULL, 'd', 'p')").fetchone()[0] is None


def test_the_cache_answers_from_its_memo_and_stays_bounded() -> None:
    cache = SeriesCache(limit=3)
    assert cache("s", "d", "p") == series_of("s", "d", "p")
    cache.memo["s"]["d"]["p"] = 42  # a hit never recomputes
    assert cache("s", "d", "p") == 42
    for k in range(10):
        assert cache(f"s{k % 2}", f"d{k % 3}", f"p{k}") == series_of(f"s{k % 2}", f"d{k % 3}", f"p{k}")
        held = sum(len(points) for devices in cache.memo.values() for points in devices.values())
        assert held == cache.size <= 3


def _batch(bid: str, readings: list[WireReading], site: str = SITE) -> Batch:
    seqs = [r.seq for r in readings]
    return Batch(site_id=site, batch_id=bid, first_seq=min(seqs), last_seq=max(seqs), created_at=0.0,
                 readings=readings, buffer=BufferStats(depth=len(readings), bytes=0))  # fmt: skip


def test_every_stored_reading_carries_its_series(db_url: str) -> None:
    db = open_db(db_url)
    rs = [WireReading(seq=k, device=f"đồng-hồ-{k % 3}", point=f"p{k % 4}", ts=float(k), value=k) for k in range(1, 40)]
    db.store_batch(_batch("b-1", rs), "rx")
    db.store_batch(_batch("b-2", rs[:5], site="site-b"), "rx")
    assert db.fetch("SELECT COUNT(*) FROM readings WHERE series = kbe_series(site_id, device, point)") == [(44,)]
    db.close()
    rows = query(db_url, "SELECT site_id, device, point, series FROM readings")
    assert len(rows) == 44
    assert all(series == series_of(s, d, p) for s, d, p, series in rows)


def _many(db_url: str) -> None:
    """200 series (one site, 20 meters x 10 points) x 50 readings, then statistics."""
    db = open_db(db_url)
    for k in range(10):
        rs = [WireReading(seq=1 + k * 1000 + i, device=f"meter-{i % 20}", point=f"p{(i // 20) % 10}",
                          ts=1000.0 + k * 5 + i / 1000, value=float(i)) for i in range(1000)]  # fmt: skip
        db.store_batch(_batch(f"b-{k}", rs), "rx")
    db.close()
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url[len("sqlite:///") :]) as lite:
            lite.execute("ANALYZE")
    else:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ANALYZE readings")


BY_POINT = (
    "FROM readings WHERE series = kbe_series('site-a', 'meter-7', 'p3') AND site_id = 'site-a' "
    "AND device = 'meter-7' AND point = 'p3' AND ts >= 1020"
)


def test_a_query_by_point_uses_the_series_index_on_postgresql() -> None:
    with pg_schema_url() as url:
        _many(url)
        plan = "\n".join(row[0] for row in query(url, f"EXPLAIN SELECT ts, value {BY_POINT}"))
        assert "readings_by_series" in plan, plan
        assert "Seq Scan" not in plan, plan
        got = query(url, f"SELECT ts, value {BY_POINT} ORDER BY ts")
    want = [(1000.0 + k * 5 + i / 1000, float(i)) for k in range(10) for i in range(1000)
            if i % 20 == 7 and (i // 20) % 10 == 3 and 1000.0 + k * 5 + i / 1000 >= 1020]  # fmt: skip
    assert got == sorted(want)
    assert len(got) == 30


def test_a_query_by_point_uses_the_series_index_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'centre.db'}"
    _many(url)
    db = SqliteReceiverDB(tmp_path / "centre.db")
    plan = " ".join(str(row[-1]) for row in db.fetch(f"EXPLAIN QUERY PLAN SELECT ts, value {BY_POINT}"))
    assert "USING INDEX readings_by_series (series=? AND ts>?)" in plan, plan
    assert len(db.fetch(f"SELECT ts, value {BY_POINT}")) == 30
    assert [r[0] for r in db.fetch("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'readings_by%'")
            ] == ["readings_by_series"]  # fmt: skip
    db.close()
