"""A centre database made by an earlier receiver (no ``series``, index ``readings_by_point``) is migrated
once when the new receiver starts: every row kept, with its series; dedup still works.

Real PostgreSQL (a fresh schema per test) and real SQLite. The old schema is written here as the
earlier receivers wrote it, so this test does not move when the receiver's DDL does.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from sync.receiver_db import PostgresReceiverDB, open_db
from sync.receiver_series import series_of
from sync.wire import Batch, BufferStats, WireReading
from tests.sync.conftest import pg_schema_url, query

_OLD_COLUMNS = (
    "site_id, seq, device, point, ts, value, value_text, value_type, unit, quality, priority, clock, meta, "
    "batch_id, received_at, receiver"
)


def _old_readings(types: dict[str, str]) -> list[str]:
    t = types
    return [
        f"""CREATE TABLE readings (
            site_id TEXT NOT NULL, seq {t["int8"]} NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,
            ts {t["float"]} NOT NULL, value {t["float"]}, value_text TEXT, value_type TEXT NOT NULL,
            unit TEXT NOT NULL, quality {t["int2"]} NOT NULL, priority {t["int2"]} NOT NULL,
            clock {t["int2"]} NOT NULL, meta {t["json"]}, batch_id TEXT NOT NULL,
            received_at {t["float"]} NOT NULL, receiver TEXT NOT NULL, PRIMARY KEY (site_id, seq))""",
        "CREATE INDEX readings_by_point ON readings (site_id, device, point, ts)",
    ]


_PG_TYPES = {"int8": "BIGINT", "float": "DOUBLE PRECISION", "int2": "SMALLINT", "json": "JSONB"}
_SQLITE_TYPES = {"int8": "INTEGER", "float": "REAL", "int2": "INTEGER", "json": "TEXT"}


def _old_rows() -> list[tuple[Any, ...]]:
    """Rows of 3 sites x 4 devices x 5 points, with every kind of value, as an old receiver stored them."""
    rows = []
    for s, site in enumerate(["bn-01", "bg-02", "site-ü"]):
        for k in range(1, 121):
            device, point = f"đồng-hồ-{k % 4}", f"p{k % 5}"
            value, text, kind = [(k * 0.5, None, "float"), (None, "on", "str"), (2.0**60, str(2**60), "int")][k % 3]
            meta = '{"k": "ü"}' if k % 7 == 0 else None
            rows.append((site, k, device, point, 1000.0 + k, value, text, kind, "V", k % 3, 2, 0, meta, f"b-{s}",
                         2000.0 + k, "rx-old"))  # fmt: skip
    return rows


@pytest.fixture
def old_pg() -> Iterator[str]:
    import psycopg

    with pg_schema_url() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for ddl in _old_readings(_PG_TYPES):
                conn.execute(ddl)
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO readings ({_OLD_COLUMNS}) VALUES ({', '.join(['%s'] * 16)})", _old_rows())
        yield url


@pytest.fixture
def old_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "centre.db"
    with closing(sqlite3.connect(path)) as db, db:
        for ddl in _old_readings(_SQLITE_TYPES):
            db.execute(ddl)
        db.executemany(f"INSERT INTO readings ({_OLD_COLUMNS}) VALUES ({', '.join('?' * 16)})", _old_rows())
    return f"sqlite:///{path}"


def _indexes(url: str) -> list[str]:
    if url.startswith("sqlite"):
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings' AND sql IS NOT NULL"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'readings' AND schemaname = current_schema()"
    return sorted(name for (name,) in query(url, sql) if not name.endswith("_pkey"))


def _json(meta: Any) -> Any:
    return json.loads(meta) if isinstance(meta, str) else meta


def _check_migrated(url: str) -> None:
    rows = query(url, f"SELECT {_OLD_COLUMNS}, series FROM readings ORDER BY site_id, seq")
    old = sorted(_old_rows())
    assert len(rows) == len(old) == 360
    for got, want in zip(rows, old, strict=True):
        assert (*got[:12], *got[13:16]) == (*want[:12], *want[13:])
        assert _json(got[12]) == _json(want[12])
        assert got[16] == series_of(want[0], want[2], want[3])
    assert _indexes(url) == ["readings_by_series"]
    # dedup: a resend of old readings stores nothing; the new one beside them is stored once
    db = open_db(url)
    rs = [WireReading(seq=k, device=f"đồng-hồ-{k % 4}", point=f"p{k % 5}", ts=1000.0 + k, value=9.0) for k in (119, 120, 121)]
    batch = Batch(site_id="bn-01", batch_id="b-new", first_seq=119, last_seq=121, created_at=0.0, readings=rs,
                  buffer=BufferStats(depth=3, bytes=0))  # fmt: skip
    assert db.store_batch(batch, "rx-new") == (1, 2)
    assert db.store_batch(batch, "rx-new") == (0, 3)
    db.close()
    assert query(url, "SELECT seq, value, receiver FROM readings WHERE site_id = 'bn-01' AND seq >= 119 ORDER BY seq") == [
        (119, 2.0**60, "rx-old"), (120, 60.0, "rx-old"), (121, 9.0, "rx-new")]  # fmt: skip


def test_an_old_postgresql_database_is_migrated_once_and_loses_nothing(old_pg: str) -> None:
    PostgresReceiverDB(old_pg).close()
    _check_migrated(old_pg)
    filenode = query(old_pg, "SELECT pg_relation_filenode('readings')")
    PostgresReceiverDB(old_pg).close()  # second start: nothing to do
    assert query(old_pg, "SELECT pg_relation_filenode('readings')") == filenode
    assert query(old_pg, "SELECT COUNT(*) FROM readings WHERE series = kbe_series(site_id, device, point)") == [(361,)]
    assert query(old_pg, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'readings'::regclass "
                         "AND attname = 'series'") == [(True,)]  # fmt: skip


def test_receivers_starting_together_on_an_old_postgresql_database_migrate_it_once(old_pg: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            PostgresReceiverDB(old_pg).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    _check_migrated(old_pg)


def test_an_old_sqlite_database_is_migrated_once_and_loses_nothing(old_sqlite: str) -> None:
    open_db(old_sqlite).close()
    _check_migrated(old_sqlite)
    version = query(old_sqlite, "PRAGMA schema_version")
    open_db(old_sqlite).close()  # second start: nothing to do
    assert query(old_sqlite, "PRAGMA schema_version") == version
    assert query(old_sqlite, "SELECT COUNT(*) FROM readings") == [(361,)]
    assert query(old_sqlite, "SELECT sql FROM sqlite_master WHERE name = 'readings'")[0][0].count("series INTEGER NOT NULL") == 1
    assert query(old_sqlite, "SELECT name FROM sqlite_master WHERE name LIKE 'kbe_readings%'") == []


def test_an_old_sqlite_database_the_migration_cannot_copy_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "centre.db"
    with closing(sqlite3.connect(path)) as db, db:  # an old table without its receiver column
        db.execute("CREATE TABLE readings (site_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (site_id, seq))")
        db.execute("INSERT INTO readings VALUES ('bn-01', 1)")
    with pytest.raises(sqlite3.OperationalError, match="no such column") as failed:
        open_db(f"sqlite:///{path}")
    # While the failure is still held (its traceback keeps the receiver's connection), the database
    # is as it was and nothing holds its write lock.
    assert failed.value is not None
    with closing(sqlite3.connect(path, timeout=0)) as other:
        other.execute("BEGIN IMMEDIATE")
        assert other.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == [
            ("readings",), ("sqlite_autoindex_readings_1",)]  # fmt: skip
        assert other.execute("SELECT * FROM readings").fetchall() == [("bn-01", 1)]
        other.execute("ROLLBACK")
