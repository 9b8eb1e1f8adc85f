"""Store ingest: readings/s committed by sync.store.Store, beside bare SQLite doing the same inserts.

    .venv/bin/python bench/bench_store.py [--readings 400000] [--batch 5000]

The baseline is a bare ``executemany`` into the same table layout with the same pragmas (WAL,
synchronous=FULL, one transaction per batch), in the same run, so the ratio is the store's overhead
(value encoding, sequence reservation, cap check, bookkeeping).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.readings import Reading
from sync.store import Store, _encode_row


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
    db.execute(
        "CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, priority INTEGER, ts REAL, device TEXT, "
        "point TEXT, value, vtype INTEGER, unit TEXT, quality INTEGER, clock INTEGER, meta TEXT)"
    )
    db.execute("CREATE INDEX readings_by_priority ON readings (priority, seq)")
    # Rows prepared before timing: the baseline measures SQLite alone.
    rows = [[_encode_row(r) for r in batch] for batch in batches]
    t0 = time.perf_counter()
    n = 0
    for batch in rows:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO readings (priority, ts, device, point, value, vtype, unit, quality, clock, meta) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            batch,
        )
        db.execute("COMMIT")
        n += len(batch)
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
    print(f"store ingest:      {best_store:>10,.0f} readings/s  (batches of {args.batch}, best of {args.rounds})")
    print(f"bare SQLite:       {best_bare:>10,.0f} readings/s  (same table, same pragmas)")
    print(f"ratio store/bare:  {best_store / best_bare:.2f}")
    print(f"target >= 100,000 readings/s: {'met' if best_store >= 100_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
