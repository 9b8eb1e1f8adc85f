"""Drain after an outage, end to end and receiver-acknowledged, beside a bare-paho baseline.

A backlog of N readings sits in the site's store (as after an outage). The uploader drains it
through a private Mosquitto to the reference receiver (a subprocess writing to PostgreSQL or
SQLite); the clock stops when the store is empty, i.e. when every batch has been acknowledged as
persisted. The baseline publishes the same signed frames with bare paho at QoS 1 to a bare paho
subscriber through the same broker: no store, no signing, no persistence, no acknowledgement.

Run: PYTHONPATH=. /work/venv/bin/python bench/bench_sync.py [--readings 200000] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho

from agent.config import SyncConfig
from bench.paho_pair import timed_publish
from kernel.metrics import Metrics
from kernel.readings import Reading
from sync.signing import Signer, generate_keypair
from sync.store import Store
from sync.uploader import Uploader
from sync.wire import BufferStats, batch_json, compress
from tests.brokers import Mosquitto, wait_port
from tests.conftest import agent_argv, agent_env

SITE = "bench-site"


def fill_store(store: Store, n: int) -> None:
    """N telemetry readings over 100 points, appended in blocks of 5000."""
    t0 = 1_790_000_000.0
    for start in range(0, n, 5000):
        store.append([
            Reading(f"meter-{i % 20:02d}", f"p{i % 5}", 230.0 + (i % 97) / 10, t0 + i * 0.01, unit="V")
            for i in range(start, min(n, start + 5000))
        ])


def frames_of(store: Store, signer: Signer, max_count: int) -> list[bytes]:
    """The signed frames of the whole backlog, built the way the uploader builds them."""
    frames, after, k = [], 0, 0
    stats = BufferStats(depth=0, bytes=0)
    while rows := store.pending(max_count, after_seq=after):
        k += 1
        doc = batch_json(SITE, f"base-{k}", 0.0, [(r.seq, r.reading) for r in rows], stats)
        frames.append(signer.frame(compress(doc), f"base-{k}"))
        after = rows[-1].seq
    return frames


def bare_paho(port: int, frames: list[bytes], max_inflight: int) -> float:
    """Seconds to move every frame publisher -> broker -> subscriber at QoS 1."""
    count = [0]

    def arrived(_m: paho.MQTTMessage) -> bool:
        count[0] += 1
        return count[0] == len(frames)

    dt, _ = timed_publish(port, [("bench/base", f) for f in frames], max_inflight, listen="bench/base",
                          on_message=arrived, listener_id="bench-sub", settle_s=0.5, timeout_s=300)
    return dt


async def drain(uploader: Uploader, store: Store, n: int) -> tuple[float, float]:
    """Seconds from start until the store is empty (every batch acknowledged), and CPU seconds used."""
    task = asyncio.create_task(uploader.run())
    while not uploader.connected:  # noqa: ASYNC110 - a benchmark's polling, not the agent's
        await asyncio.sleep(0.01)
    t, cpu = time.perf_counter(), time.process_time()
    while store.stats().depth:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    dt, cpu = time.perf_counter() - t, time.process_time() - cpu
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return dt, cpu


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--receivers", type=int, default=1, help="receiver processes in one $share group")
    ap.add_argument("--backlog-batch", type=int, default=0,
                    help="sync.batch.backlog_max_count (default: the config's own; 2000 = no growth)")
    args = ap.parse_args()
    n = args.readings
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        key, _pub = generate_keypair(tmp / "keys", SITE)
        centre_key, centre_pub = generate_keypair(tmp / "keys", "centre")
        (tmp / "sites.yaml").write_text(f"sites:\n  {SITE}:\n    public_keys: [keys/{SITE}.pub]\n")
        with Mosquitto(tmp / "broker", persistence=False) as broker:
            assert wait_port(broker.port)
            store = Store(tmp / "store.db", SITE, metrics=Metrics())
            t = time.perf_counter()
            fill_store(store, n)
            print(f"backlog: {n} readings appended in {time.perf_counter() - t:.1f} s")
            batch = {"backlog_max_count": args.backlog_batch} if args.backlog_batch else {}
            cfg = SyncConfig.model_validate({"broker": broker.url, "allow_plaintext": True, "batch": batch,
                                             "centre_public_keys": [str(centre_pub)], "signing_key_file": str(key)})
            signer = Signer.from_file(key)
            frames = frames_of(store, signer, cfg.batch.max_count)

            if args.db == "postgresql":
                import psycopg

                schema = f"kbe_bench_{int(time.time())}"
                with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
                    c.execute(f"CREATE SCHEMA {schema}")
                db = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
            else:
                db = f"sqlite:///{tmp / 'centre.db'}"
            rxs = [
                subprocess.Popen(
                    agent_argv("receiver", "--broker", broker.url, "--db", db, "--sites", str(tmp / "sites.yaml"),
                               "--signing-key", str(centre_key), "--allow-plaintext", "--client-id", f"bench-rx-{i}", "--log-level", "WARNING"),
                    env=agent_env(),
                )
                for i in range(args.receivers)
            ]
            rx_cpu = 0.0
            try:
                time.sleep(2.0)
                uploader = Uploader(cfg, SITE, store, Metrics())
                e2e, up_cpu = asyncio.run(drain(uploader, store, n))
            finally:
                for rx in rxs:
                    rx.send_signal(signal.SIGTERM)
                    _pid, _status, usage = os.wait4(rx.pid, 0)
                    rx.returncode = 0
                    rx_cpu += usage.ru_utime + usage.ru_stime
                if args.db == "postgresql":
                    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
                        c.execute(f"DROP SCHEMA {schema} CASCADE")
            base = bare_paho(broker.port, frames, cfg.max_in_flight)
            store.close()
    e2e_rate, base_rate = n / e2e, n / base
    print(f"batches of {cfg.batch.max_count} (up to {cfg.batch.backlog_max_count} under a backlog), "
          f"{cfg.max_in_flight} in flight, "
          f"{args.receivers} receiver(s) on {args.db}")
    print(f"end to end (store -> sign -> broker -> verify -> {args.db} -> ack -> delete): "
          f"{e2e_rate:,.0f} readings/s ({e2e:.2f} s)")
    print(f"bare paho QoS 1, same {len(frames)} frames, no store/sign/ack:     "
          f"{base_rate:,.0f} readings/s ({base:.2f} s)")
    print(f"ratio end-to-end / bare paho: {e2e_rate / base_rate:.4f}")
    print(f"CPU used: uploader {up_cpu:.1f} s ({n / up_cpu:,.0f} readings per CPU-second), {args.receivers} receiver process(es) "
          f"{rx_cpu:.1f} s including start-up ({n / rx_cpu:,.0f} per CPU-second); broker and database not counted")
    load = os.getloadavg()
    print(f"machine load average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    target = 20_000
    print(f"target >= {target:,}/s: {'met' if e2e_rate >= target else 'NOT met'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
