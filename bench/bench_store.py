"""Store ingest: readings/s committed by sync.store.Store, beside bare SQLite doing the same inserts.

    .venv/bin/python bench/bench_store.py [--readings 400000] [--batch 5000]

The baseline is a bare ``executemany`` of the same rows (one per poll, readings' wire JSON encoded
before timing) into the same tables with the same pragmas (WAL, synchronous=FULL, one transaction
per batch), in the same run, so the ratio is the store's overhead (encoding the readings' JSON,
sequence reservation, cap check, bookkeeping).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.readings import Reading
from sync import rowcodec
from sync.store import Store
from sync.store_schema import MIGRATIONS


def make_batches(n: int, batch: int) -> list[list[Reading]]:
    now = time.time()
    out = []
    for b in range(n // batch):
        out.append(
            [
                Reading(f"meter-{i % 50:02d}", f"p{i % 40}", 230.0 + (i % 17) * 0.1, now + b, "V")
                for i in range(b * batch, (b + 1) * batch)
            ]
        )
    return out


def bench_store(path: Path, batches: list[list[Reading]]) -> float:
    store = Store(path, "bench-site", max_bytes=4 * 1024**3)
    t0 = time.perf_counter()
    n = 0
    for batch in batches:
        n += len(store.append(batch))
    dt = time.perf_counter() - t0
    store.close()
    return n / dt


def bench_bare(path: Path, batches: list[list[Reading]]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for migrate in MIGRATIONS:
        migrate(db)
    # Rows encoded before timing (seqs, wire JSON): the baseline measures SQLite alone.
    rows, seq = [], 1
    for batch in batches:
        rows.append(rowcodec.build_rows(seq, batch, rowcodec.encode_tails(batch)))
        seq += len(batch)
    t0 = time.perf_counter()
    n = 0
    for batch_rows in rows:
        db.execute("BEGIN")
        db.executemany("INSERT INTO polls (seq_first, seq_last, priority, ts, n, body) VALUES (?,?,?,?,?,?)",
                       batch_rows)
        db.execute("COMMIT")
        n += sum(r[4] for r in batch_rows)
    dt = time.perf_counter() - t0
    db.close()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--readings", type=int, default=400_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    batches = make_batches(args.readings, args.batch)
    best_store = best_bare = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            # Alternate the order so neither side always runs on a cold cache.
            if r % 2:
                best_store = max(best_store, bench_store(Path(tmp) / f"store{r}.db", batches))
                best_bare = max(best_bare, bench_bare(Path(tmp) / f"bare{r}.db", batches))
            else:
                best_bare = max(best_bare, bench_bare(Path(tmp) / f"bare{r}.db", batches))
                best_store = max(best_store, bench_store(Path(tmp) / f"store{r}.db", batches))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"store ingest:      {best_store:>10,.0f} readings/s  (batches of {args.batch}, best of {args.rounds})")
    print(f"bare SQLite:       {best_bare:>10,.0f} readings/s  (same rows pre-encoded, same pragmas)")
    print(f"ratio store/bare:  {best_store / best_bare:.2f}")
    print(f"target >= 100,000 readings/s: {'met' if best_store >= 100_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
