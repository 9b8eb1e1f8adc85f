"""Agent CPU per point on the store and uplink hot path, in process: the store layout of this tree
beside the one-row-per-reading layout it replaced, in the same run.

    PYTHONPATH=. .venv/bin/python bench/bench_hotpath.py [--polls 2000] [--points 50] [--batch 2000]
        [--baseline-rev 13a3abc] [--rounds 2]

Appends N polls of P readings (one writer commit per 20 polls, as the writer does at 1,000 devices),
then composes, encodes, compresses and signs every reading into batches of B exactly as the
uploader does (its :class:`~sync.batches.BatchComposer`, with a batch in flight while the next is
made and the oldest acknowledged
once ``max_in_flight`` are out, as on the wire). Prints µs of CPU (process time) per point for each stage, with the
load average. The baseline is the real code of the old layout (``sync/store.py`` and
``sync/batches.py`` as of ``--baseline-rev``, read from git), run on the same readings in the same
process; rounds alternate between the two and the minimum of each is printed. No broker: the wire
and the broker are measured by bench_sync.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import SyncConfig
from kernel.clock import Clock
from kernel.readings import Reading
from sync.batches import BatchComposer
from sync.signing import Signer, generate_keypair
from sync.store import Store

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REV = "13a3abc"  # the tree before one row per poll (schema version 1)


def polls(n: int, points: int) -> list[list[Reading]]:
    """N polls of a meter with P points each (floats, one device per poll)."""
    t = time.time()
    return [
        [Reading(f"meter-{i % 1000:04d}", f"p{j:02d}", 230.0 + j * 0.1 + i * 1e-3, t + i * 1e-3, "V") for j in range(points)]
        for i in range(n)
    ]


def legacy(rev: str) -> tuple[Any, Any]:
    """``Store`` and ``BatchComposer`` of the old layout, compiled from git at ``rev``."""
    found = []
    for name in ("store", "batches"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:sync/{name}.py"],
                             capture_output=True, text=True, check=True).stdout
        mod = types.ModuleType(f"legacy_{name}")
        sys.modules[mod.__name__] = mod
        exec(compile(src, f"{rev}:sync/{name}.py", "exec"), mod.__dict__)  # our own history, not input
        found.append(mod)
    return found[0].Store, found[1].BatchComposer


def run(store_cls: Any, composer_cls: Any, data: list[list[Reading]], cfg: SyncConfig, signer: Signer,
        per_commit: int, work: Path) -> dict[str, float]:
    """CPU seconds of each stage for one layout; the database is made afresh."""
    path = work / f"{store_cls.__module__}.db"
    for suffix in ("", "-wal", "-shm", ".seq"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = store_cls(path, "bench", max_bytes=4 * 1024**3)
    t0 = time.process_time()
    for i in range(0, len(data), per_commit):
        store.append([r for poll in data[i : i + per_commit] for r in poll])
    t_append = time.process_time() - t0
    disk = store.bytes_used()
    sent: set[int] = set()
    composer = composer_cls(cfg, "bench", store, Clock(), signer, sent)
    composer.flushing = True
    t0 = time.process_time()
    t_ack = 0.0
    batches: list[list[int]] = []
    nbytes = 0
    window = cfg.max_in_flight
    while (prepared := composer.prepare()) is not None:
        composed, (frame, _bid, seqs, _digest) = prepared
        sent.update(seqs)
        composer.advance(composed)
        batches.append(seqs)
        nbytes += len(frame)
        if len(batches) >= window:  # max_in_flight batches in flight; the oldest is acknowledged
            t1 = time.process_time()
            store.ack(batches[-window])
            sent.difference_update(batches[-window])
            t_ack += time.process_time() - t1
    t1 = time.process_time()
    for seqs in batches[-window + 1 :] if window > 1 else []:
        store.ack(seqs)
    t_ack += time.process_time() - t1
    t_encode = time.process_time() - t0 - t_ack
    sent_n = sum(len(s) for s in batches)
    left = store.depth()
    store.close()
    return {"append": t_append, "encode": t_encode, "ack": t_ack, "sent": sent_n, "left": left, "bytes": nbytes, "disk": disk}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--polls", type=int, default=2000)
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--backlog-batch", type=int, default=0,
                    help="batch.backlog_max_count (default: --batch, i.e. no growth: like for like)")
    ap.add_argument("--per-commit", type=int, default=20, help="polls per writer commit")
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of the old layout")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    data = polls(args.polls, args.points)
    total = args.polls * args.points
    old_store, old_composer = legacy(args.baseline_rev)
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key, _pub = generate_keypair(work / "keys", "site")
        _ck, cpub = generate_keypair(work / "keys", "centre")
        cfg = SyncConfig.model_validate({
            "broker": "mqtt://127.0.0.1:1", "allow_plaintext": True, "signing_key_file": str(key),
            "centre_public_keys": [str(cpub)],
            "batch": {"max_count": args.batch, "backlog_max_count": args.backlog_batch or args.batch,
                      "max_bytes": 4_000_000},
        })  # fmt: skip
        signer = Signer.from_file(key)
        for _ in range(args.rounds):
            for name, store_cls, composer_cls in (("old", old_store, old_composer), ("new", Store, BatchComposer)):
                got = run(store_cls, composer_cls, data, cfg, signer, args.per_commit, work)
                if got["sent"] != total or got["left"] != 0:
                    raise SystemExit(f"{name} layout sent {got['sent']} of {total}, left {got['left']}")
                prev = best.get(name)
                best[name] = got if prev is None else {k: min(v, prev[k]) for k, v in got.items()}
    load = os.getloadavg()
    us = 1e6 / total
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.polls} polls x {args.points} points; "
          f"batches of {args.batch} (under a backlog {args.backlog_batch or args.batch}); "
          f"{args.per_commit} polls per commit; best of {args.rounds} rounds; baseline {args.baseline_rev}")
    print(f"{'stage':24} {'old layout':>12} {'new layout':>12} {'ratio':>7}")
    for stage, label in (("append", "store append"), ("encode", "compose+encode+sign"), ("ack", "ack (delete)")):
        o, n = best["old"][stage] * us, best["new"][stage] * us
        print(f"{label:24} {o:9.2f} us {n:9.2f} us {o / n:6.2f}x")
    o = sum(best["old"][s] for s in ("append", "encode", "ack")) * us
    n = sum(best["new"][s] for s in ("append", "encode", "ack")) * us
    print(f"{'total store+uplink':24} {o:9.2f} us {n:9.2f} us {o / n:6.2f}x")
    print(f"wire bytes/point: old {best['old']['bytes'] / total:.1f}, new {best['new']['bytes'] / total:.1f}; "
          f"store bytes/point: old {best['old']['disk'] / total:.1f}, new {best['new']['disk'] / total:.1f}")


if __name__ == "__main__":
    main()
