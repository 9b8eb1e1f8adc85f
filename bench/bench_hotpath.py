"""Agent CPU per point on the store and uplink hot path, in-process, old code path beside new.

    .venv/bin/python bench/bench_hotpath.py [--polls 2000] [--points 50] [--batch 2000]

Appends N polls of P readings (one writer commit per 20 polls, as the writer does at 1,000 devices),
then composes, encodes, compresses and signs every reading into batches of B exactly as the
uploader does, then acknowledges them. Prints µs of CPU (process time) per point for each stage,
with the load average. No broker: the wire and the broker are measured by bench_sync.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import SyncConfig
from kernel.metrics import Metrics
from kernel.readings import Reading
from sync.signing import generate_keypair
from sync.store import Store
from sync.uploader import Uploader
from sync.wire import batch_json, compress


def polls(n: int, points: int) -> list[list[Reading]]:
    """N polls of a meter with P points each (floats, one device per poll)."""
    t = time.time()
    return [
        [Reading(f"meter-{i % 1000:04d}", f"p{j:02d}", 230.0 + j * 0.1 + i * 1e-3, t + i * 1e-3, "V") for j in range(points)]
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--polls", type=int, default=2000)
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--backlog-batch", type=int, default=0,
                    help="batch.backlog_max_count (default: --batch, i.e. no growth: like for like with the old path)")
    ap.add_argument("--per-commit", type=int, default=20, help="polls per writer commit")
    args = ap.parse_args()
    data = polls(args.polls, args.points)
    total = args.polls * args.points
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key, _pub = generate_keypair(work / "keys", "site")
        _ck, cpub = generate_keypair(work / "keys", "centre")
        store = Store(work / "s.db", "bench")
        t0 = time.process_time()
        for i in range(0, len(data), args.per_commit):
            store.append([r for poll in data[i : i + args.per_commit] for r in poll])
        t_append = time.process_time() - t0
        cfg = SyncConfig.model_validate(
            {
                "broker": "mqtt://127.0.0.1:1",
                "allow_plaintext": True,
                "signing_key_file": str(key),
                "centre_public_keys": [str(cpub)],
                "batch": {
                    "max_count": args.batch,
                    "backlog_max_count": args.backlog_batch or args.batch,
                    "max_bytes": 4_000_000,
                },
            }
        )
        up = Uploader(cfg, "bench", store, Metrics())
        # Baseline in the same run, on the same rows: the path before rows went straight to JSON
        # (pending() builds a Reading per row, batch_json() a dict per reading), then compress + sign.
        t0 = time.process_time()
        after = 0
        stats = up.batches.buffer_stats()
        while rows := store.pending(args.batch, after_seq=after):
            after = rows[-1].seq
            doc = batch_json("bench", "b", 0.0, [(r.seq, r.reading) for r in rows], stats)
            up.signer.frame(compress(doc), "b")
        t_legacy = time.process_time() - t0
        up.batches.flushing = True
        t0 = time.process_time()
        sent: list[list[int]] = []
        nbytes = 0
        while True:
            prepared = up.batches.prepare()
            if prepared is None:
                break
            composed, (frame, _bid, seqs, _digest) = prepared
            up.window.sent.update(seqs)
            up.batches.advance(composed)
            sent.append(seqs)
            nbytes += len(frame)
        t_encode = time.process_time() - t0
        t0 = time.process_time()
        for seqs in sent:
            store.ack(seqs)
        t_ack = time.process_time() - t0
        n_sent = sum(len(s) for s in sent)
        store.close()
    load = os.getloadavg()
    us = 1e6 / total
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.polls} polls x {args.points} points; "
          f"batches of {args.batch} (under a backlog {args.backlog_batch or args.batch}); sent {n_sent}/{total}; {nbytes / max(n_sent, 1):.1f} wire bytes/point")
    print(f"store append:           {t_append * us:6.2f} us/point")
    print(f"compose+encode+sign:    {t_encode * us:6.2f} us/point "
          f"(old path via Reading objects: {t_legacy * us:.2f} us/point, ratio {t_legacy / t_encode:.2f}x)")
    print(f"ack (delete):           {t_ack * us:6.2f} us/point")
    print(f"total store+uplink:     {(t_append + t_encode + t_ack) * us:6.2f} us/point")


if __name__ == "__main__":
    main()
