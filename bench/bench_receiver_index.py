"""What the receiver's per-point index costs PostgreSQL: backend CPU per row of ``readings``, million by million.

Rows as the end-to-end ladder's receiver writes them (site ``ladder-site``, 1,400 devices ``g<g>-u<u>``
x 50 points ``k<i>``, one reading of every point per second, in poll order) are binary-``COPY``ed in
batches of 2,000 rows, one transaction each, into a fresh ``readings`` table, once per layout:

- ``point``: the schema before the series key, index ``readings_by_point (site_id, device, point, ts)``;
- ``series``: today's schema (``sync.receiver_db._PG_DDL``), index ``readings_by_series (series, ts)``;
- ``pk``: today's schema without its secondary index (primary key only): the floor;
- ``sha64`` and ``dense``: today's schema with other keys, for comparison: 8 random bytes (the first
  8 of SHA-256 of the three names), and the points numbered in poll order (as a dictionary table
  would number them).

Per million rows: CPU of the one backend doing the COPY (``/proc/<pid>/stat``), CPU of the whole
cluster (checkpointer, WAL writer and background writer included; private cluster only) and rows/s.
``--migrate N`` instead fills an old-layout table with N rows and times the receiver's start-up
migration on it (PostgreSQL, then SQLite).

The centre's database is the private, tuned cluster of :mod:`bench.pg_cluster` unless ``--pg shared``.

Run: PYTHONPATH=. .venv/bin/python bench/bench_receiver_index.py [--rows 5000000] [--layouts point,series,pk,sha64,dense]
     PYTHONPATH=. .venv/bin/python bench/bench_receiver_index.py --migrate 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.pg_cluster import PrivatePostgres
from sync.receiver_db import _PG_DDL, _PG_READING_TYPES, READING_COLUMNS, PostgresReceiverDB, SqliteReceiverDB
from sync.receiver_series import SeriesCache, series_of

SITE = "ladder-site"
SHARED = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "kbe_bench_index"
TICK = os.sysconf("SC_CLK_TCK")
OLD_COLUMNS = READING_COLUMNS[:-1]  # before the series key
OLD_DDL = [
    "CREATE TABLE readings (site_id TEXT NOT NULL, seq BIGINT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL, "
    "ts DOUBLE PRECISION NOT NULL, value DOUBLE PRECISION, value_text TEXT, value_type TEXT NOT NULL, "
    "unit TEXT NOT NULL, quality SMALLINT NOT NULL, priority SMALLINT NOT NULL, clock SMALLINT NOT NULL, meta JSONB, "
    "batch_id TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL, receiver TEXT NOT NULL, PRIMARY KEY (site_id, seq))",
    "CREATE INDEX readings_by_point ON readings (site_id, device, point, ts)",
]
OLD_SQLITE_DDL = [
    "CREATE TABLE readings (site_id TEXT NOT NULL, seq INTEGER NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL, "
    "ts REAL NOT NULL, value REAL, value_text TEXT, value_type TEXT NOT NULL, unit TEXT NOT NULL, "
    "quality INTEGER NOT NULL, priority INTEGER NOT NULL, clock INTEGER NOT NULL, meta TEXT, batch_id TEXT NOT NULL, "
    "received_at REAL NOT NULL, receiver TEXT NOT NULL, PRIMARY KEY (site_id, seq))",
    "CREATE INDEX readings_by_point ON readings (site_id, device, point, ts)",
]


def load() -> str:
    """The 1-minute load average."""
    return f"load {os.getloadavg()[0]:.2f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def lookup_cost(devices: int, points: int) -> str:
    """The receiver's series per reading: computed (SHA-256) and from its warm cache, on fresh strings
    as a decoder hands them over (their hashes not computed yet)."""
    keys = [(f"g{d // 50}-u{d % 50 + 1}", f"k{p}") for d in range(devices) for p in range(points)][:20_000]
    cache = SeriesCache()
    for dev, pt in keys:
        cache(SITE, dev, pt)
    best = {"computed": 1e9, "cached": 1e9}
    for _ in range(5):
        fresh = [(dev.encode().decode(), pt.encode().decode()) for dev, pt in keys]
        t = time.perf_counter()
        for dev, pt in fresh:
            series_of(SITE, dev, pt)
        best["computed"] = min(best["computed"], time.perf_counter() - t)
        fresh = [(dev.encode().decode(), pt.encode().decode()) for dev, pt in keys]
        t = time.perf_counter()
        devs = cache.site(SITE)
        for dev, pt in fresh:
            devs[dev][pt]  # the receiver's lookup (sync.receiver_db._rows)
        best["cached"] = min(best["cached"], time.perf_counter() - t)
    return ", ".join(f"{k} {v * 1e9 / len(keys):.0f} ns" for k, v in best.items())


def sha64(site: str, device: str, point: str) -> int:
    """A key without locality: the first 8 bytes of SHA-256 of the three names."""
    return int.from_bytes(hashlib.sha256(f"{site}\0{device}\0{point}".encode()).digest()[:8], "big", signed=True)


KEYS: dict[str, Callable[[int, str, str, str], int] | None] = {
    "point": None,  # no series column
    "series": lambda _i, s, d, p: series_of(s, d, p),
    "pk": lambda _i, s, d, p: series_of(s, d, p),
    "sha64": lambda _i, s, d, p: sha64(s, d, p),
    "dense": lambda i, _s, _d, _p: i,  # numbered in poll order, as a dictionary table would number them
}


def batches(total: int, size: int, devices: int, points: int, layout: str) -> Iterator[list[tuple[Any, ...]]]:
    """``total`` rows in batches of ``size``: every point once a second, device by device."""
    keys = [(f"g{d // 50}-u{d % 50 + 1}", f"k{p}") for d in range(devices) for p in range(points)]
    key = KEYS[layout]
    series = key is not None
    ids = [key(i, SITE, dev, pt) if key else 0 for i, (dev, pt) in enumerate(keys)]
    seq, ts, out = 0, 1_790_000_000.0, []
    while seq < total:
        for (dev, pt), sid in zip(keys, ids, strict=True):
            seq += 1
            row = (SITE, seq, dev, pt, ts, float(seq % 40_000), None, "int", "", 0, 2, 0, None,
                   f"b-{seq // size}", ts + 0.5, "probe")  # fmt: skip
            out.append((*row, sid) if series else row)
            if len(out) == size:
                yield out
                out = []
            if seq == total:
                break
        ts += 1.0
    if out:
        yield out


@contextlib.contextmanager
def schema(base: str, name: str) -> Iterator[str]:
    """A URL whose search_path is a new, empty schema of the bench database; dropped afterwards."""
    with psycopg.connect(f"{base}/{DATABASE}", autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        c.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{base}/{DATABASE}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(f"{base}/{DATABASE}", autocommit=True) as c:
            c.execute(f"DROP SCHEMA {name} CASCADE")


def copy_in(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]], columns: tuple[str, ...]) -> None:
    """One batch: one transaction, one binary COPY."""
    types = _PG_READING_TYPES[: len(columns)]
    with conn.transaction(), conn.cursor() as cur, cur.copy(
        f"COPY readings ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    ) as cp:
        cp.set_types(types)
        for row in rows:
            cp.write_row(row)


def probe(base: str, layout: str, args: argparse.Namespace, cluster: PrivatePostgres | None) -> None:
    """COPY args.rows rows into a fresh table of the layout; print each million's figures."""
    old = layout == "point"
    columns = OLD_COLUMNS if old else READING_COLUMNS
    with schema(base, f"kbe_probe_{layout}") as url, psycopg.connect(url, autocommit=True) as conn:
        for ddl in OLD_DDL if old else _PG_DDL[:2]:
            conn.execute(ddl)
        if layout == "pk":
            conn.execute("DROP INDEX readings_by_series")
        pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        print(f"layout {layout}: indexes "
              f"{[r[0] for r in conn.execute('SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()')]}  "
              f"[{time.strftime('%H:%M:%S', time.gmtime())} UTC, {load()}]", flush=True)  # fmt: skip
        step, done, mark = args.step, 0, 0
        t0, b0, c0 = time.perf_counter(), cpu_seconds(pid), cluster.cpu_seconds() if cluster else 0.0
        for rows in batches(args.rows, args.batch, args.devices, args.points, layout):
            copy_in(conn, rows, columns)
            done += len(rows)
            if done - mark >= step or done == args.rows:
                t1, b1, c1 = time.perf_counter(), cpu_seconds(pid), cluster.cpu_seconds() if cluster else 0.0
                n = done - mark
                cluster_us = f"{(c1 - c0) * 1e6 / n:5.2f}" if cluster else "  n/a"
                print(f"  {layout:6s} rows {mark / 1e6:4.1f}-{done / 1e6:4.1f} M: backend {(b1 - b0) * 1e6 / n:5.2f} µs/row, "
                      f"cluster {cluster_us} µs/row, {n / (t1 - t0):9,.0f} rows/s  [{load()}]", flush=True)  # fmt: skip
                t0, b0, c0, mark = t1, b1, c1, done
        sizes = conn.execute(
            "SELECT relname, pg_size_pretty(pg_relation_size(oid)) FROM pg_class "
            "WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'i') ORDER BY relname"
        ).fetchall()
        print(f"  {layout:6s} sizes: " + ", ".join(f"{name} {size}" for name, size in sizes), flush=True)


def migrate(base: str, n: int, args: argparse.Namespace) -> None:
    """Time the receiver's start-up migration of an old-layout table of n rows, PostgreSQL then SQLite."""
    with schema(base, "kbe_probe_migrate") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for ddl in OLD_DDL:
                conn.execute(ddl)
            for rows in batches(n, args.batch, args.devices, args.points, "point"):
                copy_in(conn, rows, OLD_COLUMNS)
            conn.execute("VACUUM ANALYZE readings")
        t = time.perf_counter()
        PostgresReceiverDB(url).close()
        dt = time.perf_counter() - t
        with psycopg.connect(url) as conn:
            count = conn.execute("SELECT COUNT(*) FROM readings WHERE series IS NOT NULL").fetchone()
        print(f"PostgreSQL migration of {n:,} rows: {dt:.1f} s ({dt * 1e6 / n:.0f} s per million rows; "
              f"{count[0] if count else 0:,} rows with their series)  [{time.strftime('%H:%M', time.gmtime())} UTC, "
              f"{load()}]", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "centre.db"
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            for ddl in OLD_SQLITE_DDL:
                db.execute(ddl)
            marks = ", ".join("?" * len(OLD_COLUMNS))
            for rows in batches(n, args.batch, args.devices, args.points, "point"):
                db.executemany(f"INSERT INTO readings ({', '.join(OLD_COLUMNS)}) VALUES ({marks})", rows)
        t = time.perf_counter()
        SqliteReceiverDB(path).close()
        dt = time.perf_counter() - t
        print(f"SQLite migration of {n:,} rows: {dt:.1f} s ({dt * 1e6 / n:.0f} s per million rows)  "
              f"[{time.strftime('%H:%M', time.gmtime())} UTC, {load()}]", flush=True)  # fmt: skip


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--step", type=int, default=1_000_000, help="rows per printed line")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=1400)
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--layouts", default="point,series,pk")
    ap.add_argument("--migrate", type=int, default=0, help="rows of an old table to migrate (instead of the probe)")
    ap.add_argument("--pg", choices=("private", "shared"), default="private")
    args = ap.parse_args()
    cluster = None
    base = SHARED
    if args.pg == "private":
        cluster = PrivatePostgres()
        cluster.start()
        base = cluster.url
        print("private PostgreSQL cluster: " + ", ".join(f"{k}={v}" for k, v in cluster.settings.items()))
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                c.execute(f"CREATE DATABASE {DATABASE}")
        print(f"{args.devices} devices x {args.points} points, batches of {args.batch} rows; "
              f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {load()} on {os.cpu_count()} cores")  # fmt: skip
        print(f"series per reading in the receiver: {lookup_cost(args.devices, args.points)}  [{load()}]", flush=True)
        if args.migrate:
            migrate(base, args.migrate, args)
            return
        for layout in args.layouts.split(","):
            probe(base, layout, args, cluster)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
