"""The centre's receiver at full speed: readings/s into PostgreSQL, one receiver and two on ``$share``.

Pre-built signed batches (2000 readings each, made exactly as the agent's uplink makes them:
``batch_json`` + zlib + Ed25519) are published at QoS 1 by a fast paho publisher to a private
Mosquitto; ``edge-agent receiver`` subprocesses in one ``$share`` group verify, decode, store them
in PostgreSQL and acknowledge; the clock stops at the last ack. CPU seconds are read from
``/proc/<pid>/stat`` of every receiver, of the PostgreSQL backends serving them and of the broker,
over that window only (start-up not counted).

Baselines in the same run: a bare binary COPY of the same rows into the same table (one
connection, one transaction per 2000 rows: PostgreSQL's own ceiling here, no MQTT, no checks), and
optionally the receiver of another checkout (``--before``, e.g. an export of ``main``). The agent's
side is measured in the same run too: the real :class:`sync.uploader.Uploader` drains a backlog
from the real store to the same receivers, and its CPU µs per reading is printed beside theirs.

The centre's database is a private PostgreSQL cluster tuned as a DBA would (:mod:`bench.pg_cluster`,
as the end-to-end ladder's), or with ``--pg shared`` the machine's server on port 5432.

Run: PYTHONPATH=. .venv/bin/python bench/bench_receiver.py [--readings 400000] [--receivers 1,2] [--pg shared]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import psycopg

from agent.config import SyncConfig
from bench.bench_sync import drain
from bench.paho_pair import timed_publish
from bench.pg_cluster import PrivatePostgres
from kernel.metrics import Metrics
from kernel.readings import Reading
from sync.receiver_db import _PG_DDL, _PG_READING_TYPES, READING_COLUMNS, _rows
from sync.receiver_series import SeriesCache
from sync.signing import Signer, generate_keypair
from sync.store import Store
from sync.uploader import Uploader
from sync.wire import BufferStats, batch_json, compress, decode_batch, unpack_frame
from tests.brokers import Mosquitto, wait_port
from tests.conftest import agent_argv, agent_env

PG = "postgresql://postgres@127.0.0.1:5432"  # the private cluster's address once started (``--pg private``)
DATABASE = "bench_receiver_fast"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def load() -> str:
    """The 1-minute load average, and the cores it is shared by."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


@functools.cache
def point_keys(points: int) -> list[tuple[str, str]]:
    """(device, point) of ``points`` points: devices of 50 points ``k<i>``."""
    return [(f"meter-{k // 50:04d}", f"k{k % 50}") for k in range(points)]


def readings(site_index: int, first_seq: int, n: int, points: int = 0) -> list[tuple[int, Reading]]:
    """n telemetry readings of one site, as the store would hand them over: 20 meters x 5 points, or
    with ``points`` that many points (devices of 50 points ``k<i>``), each read once a second in turn."""
    t0 = 1_790_000_000.0
    if points:
        keys = point_keys(points)
        return [
            (seq, Reading(*keys[seq % points], 230.0 + (seq % 97) / 10, t0 + seq // points, unit="V"))
            for seq in range(first_seq, first_seq + n)
        ]
    return [
        (first_seq + i, Reading(f"meter-{i % 20:02d}", f"p{i % 5}", 230.0 + (i % 97) / 10, t0 + i * 0.01, unit="V"))
        for i in range(n)
    ]


def build_frames(signers: dict[str, Signer], total: int, size: int, points: int = 0) -> list[tuple[str, bytes]]:
    """(site, signed frame) for ``total`` readings spread over the sites, ``size`` per batch."""
    out: list[tuple[str, bytes]] = []
    next_seq = dict.fromkeys(signers, 1)
    sites = list(signers)
    for k in range(total // size):
        site = sites[k % len(sites)]
        bid = f"bench-{k}"
        doc = batch_json(site, bid, 0.0, readings(k, next_seq[site], size, points), BufferStats(depth=size, bytes=0))
        next_seq[site] += size
        out.append((site, signers[site].frame(compress(doc), bid)))
    return out


@contextlib.contextmanager
def fresh_schema(name: str) -> Iterator[str]:
    """A URL whose search_path is a new, empty schema of the bench database; dropped afterwards."""
    with psycopg.connect(f"{PG}/{DATABASE}", autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        c.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{PG}/{DATABASE}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(f"{PG}/{DATABASE}", autocommit=True) as c:
            c.execute(f"DROP SCHEMA {name} CASCADE")


def ensure_database() -> None:
    """Create the bench's own database once."""
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            c.execute(f"CREATE DATABASE {DATABASE}")


def backend_pids() -> list[int]:
    """PostgreSQL backends connected to the bench database (the receivers' sessions)."""
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        rows = c.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (DATABASE,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def bare_copy(frames: list[tuple[str, bytes]]) -> float:
    """Seconds for one connection to binary-COPY the same rows, one transaction per batch."""
    series = SeriesCache()
    batches = [_rows(decode_batch(unpack_frame(f)), "bare", 0.0, series) for _site, f in frames]
    cols = ", ".join(READING_COLUMNS)
    with fresh_schema("kbe_bench_bare") as url, psycopg.connect(url, autocommit=True) as c:
        for ddl in _PG_DDL:
            c.execute(ddl)
        t = time.perf_counter()
        for rows in batches:
            with c.transaction(), c.cursor() as cur, cur.copy(f"COPY readings ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(_PG_READING_TYPES)
                for row in rows:
                    cp.write_row(row)
        return time.perf_counter() - t


@dataclass
class Receivers:
    """``edge-agent receiver`` subprocesses of one ``$share`` group."""

    procs: list[subprocess.Popen[bytes]]

    @classmethod
    def start(cls, tag: str, n: int, broker: str, db: str, sites: Path, key: Path, checkout: Path | None) -> Receivers:
        """n receivers in the group ``bench-<tag>`` (new client ids and group per window: no old session's queue)."""
        env = agent_env()
        if checkout is not None:
            env["PYTHONPATH"] = str(checkout)
        procs = [
            subprocess.Popen(
                agent_argv("receiver", "--broker", broker, "--db", db, "--sites", str(sites), "--signing-key",
                           str(key), "--allow-plaintext", "--client-id", f"bench-rx-{tag}-{i}", "--group", f"bench-{tag}",
                           "--log-level", "WARNING"),
                env=env, cwd=checkout,
            )
            for i in range(n)
        ]
        return cls(procs)

    def cpu(self) -> float:
        """CPU seconds of every receiver so far."""
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        """SIGTERM each by PID and wait."""
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def publish_all(port: int, frames: list[tuple[str, bytes]], inflight: int) -> float:
    """Publish every frame at QoS 1; seconds until every batch is acknowledged."""
    acked: set[str] = set()

    def on_ack(m: paho.MQTTMessage) -> bool:
        acked.add(unpack_frame(m.payload).msg_id)
        return len(acked) == len(frames)

    dt, reached = timed_publish(port, [(f"kbe/{site}/up/batch", frame) for site, frame in frames], inflight,
                                listen="kbe/+/down/ack", on_message=on_ack, listener_id="bench-acks",
                                settle_s=1.0, timeout_s=600)
    if not reached:
        print(f"only {len(acked)} of {len(frames)} batches acknowledged in 600 s", file=sys.stderr)
    return dt


def log_size(broker: Mosquitto) -> int:
    """Where the broker's log ends now."""
    return broker.log.stat().st_size if broker.log.exists() else 0


def wait_connected(broker: Mosquitto, n: int, since: int, timeout: float = 30.0) -> None:
    """Until the broker's log shows n receivers connected after ``since`` (they subscribe right after)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with broker.log.open("rb") as f:
            f.seek(since)
            if f.read().count(b" as bench-rx-") >= n:
                break
        time.sleep(0.2)
    time.sleep(1.5)


@dataclass
class Run:
    """One measured window."""

    label: str
    n: int
    seconds: float
    rx_cpu: float
    db_cpu: float
    broker_cpu: float
    load: str

    def line(self) -> str:
        """The row printed for it."""
        us = 1e6 / self.n
        return (f"{self.label:34s} {self.n / self.seconds:>10,.0f} readings/s ({self.seconds:6.2f} s)  CPU µs/reading: "
                f"receiver {self.rx_cpu * us:5.2f}, PostgreSQL {self.db_cpu * us:5.2f}, broker {self.broker_cpu * us:4.2f}"
                f"  [{self.load}]")  # fmt: skip


def measure(label: str, n_rx: int, frames: list[tuple[str, bytes]], args: argparse.Namespace, tmp: Path,
            broker: Mosquitto, checkout: Path | None) -> Run:  # fmt: skip
    """Start n receivers on a fresh schema, publish every frame, stop them; the window's figures."""
    with fresh_schema(f"kbe_bench_rx{n_rx}") as db:
        since = log_size(broker)
        rx = Receivers.start(f"{'before' if checkout else 'now'}-{n_rx}", n_rx, broker.url, db, tmp / "sites.yaml", tmp / "keys" / "centre.key", checkout)
        try:
            wait_connected(broker, n_rx, since)
            backends = backend_pids()
            assert broker.proc is not None
            before = rx.cpu(), sum(map(cpu_seconds, backends)), cpu_seconds(broker.proc.pid)
            seconds = publish_all(broker.port, frames, args.inflight)
            after = rx.cpu(), sum(map(cpu_seconds, backends)), cpu_seconds(broker.proc.pid)
            here = load()
        finally:
            rx.stop()
        with psycopg.connect(db) as c:
            stored = c.execute("SELECT COUNT(*) FROM readings").fetchone()
        n = len(frames) * args.batch
        if stored is None or stored[0] != n:
            raise SystemExit(f"{label}: {stored} rows stored, expected {n}")
    return Run(label, n, seconds, after[0] - before[0], after[1] - before[1], after[2] - before[2], here)


def uplink(n: int, key: Path, centre_pub: Path, tmp: Path, broker: Mosquitto) -> str:
    """The agent's uplink draining n readings to one receiver: its CPU µs per reading beside the receiver's."""
    site = "site-00"
    store = Store(tmp / "uplink.db", site, metrics=Metrics())
    for start in range(0, n, 5000):
        store.append([r for _seq, r in readings(0, start + 1, min(5000, n - start))])
    cfg = SyncConfig.model_validate({"broker": broker.url, "allow_plaintext": True, "signing_key_file": str(key),
                                     "centre_public_keys": [str(centre_pub)]})  # fmt: skip
    with fresh_schema("kbe_bench_uplink") as db:
        since = log_size(broker)
        rx = Receivers.start("uplink", 1, broker.url, db, tmp / "sites.yaml", tmp / "keys" / "centre.key", None)
        try:
            wait_connected(broker, 1, since)
            rx_before = rx.cpu()
            seconds, up_cpu = asyncio.run(drain(Uploader(cfg, site, store, Metrics()), store, n))
            rx_cpu = rx.cpu() - rx_before
        finally:
            rx.stop()
            store.close()
    return (f"agent uplink (real store + Uploader) -> 1 receiver: {n / seconds:,.0f} readings/s; CPU µs/reading: "
            f"agent uplink {up_cpu * 1e6 / n:.2f}, receiver {rx_cpu * 1e6 / n:.2f}  [{load()}]")  # fmt: skip


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=400_000)
    ap.add_argument("--batch", type=int, default=2000, help="readings per batch (the uplink's backlog size)")
    ap.add_argument("--sites", type=int, default=8)
    ap.add_argument("--receivers", default="1,2", help="comma-separated receiver counts, each in its own window")
    ap.add_argument("--inflight", type=int, default=64, help="publisher's QoS 1 window")
    ap.add_argument("--before", type=Path, default=None, help="another checkout whose receiver runs as a baseline")
    ap.add_argument("--before-all", action="store_true", help="the baseline at every --receivers count, not only the first")
    ap.add_argument("--uplink-readings", type=int, default=100_000, help="0: skip the agent-side window")
    ap.add_argument("--points-per-site", type=int, default=0,
                    help="distinct points per site (devices of 50 points); 0: 20 meters x 5 points")
    ap.add_argument("--pg", choices=("private", "shared"), default="private",
                    help="the centre's database: a private cluster tuned as a DBA would (bench/pg_cluster.py), or "
                         "the machine's shared server")  # fmt: skip
    args = ap.parse_args()
    counts = [int(c) for c in args.receivers.split(",")]
    with contextlib.ExitStack() as stack:
        if args.pg == "private":
            start_private_pg(stack)
        run(args, counts)


def start_private_pg(stack: contextlib.ExitStack) -> None:
    """Start the private, tuned cluster; stopped (by PID) and removed when the stack closes."""
    global PG
    cluster = PrivatePostgres()
    stack.callback(cluster.stop)
    cluster.start()
    PG = cluster.url
    print("centre database: private PostgreSQL cluster, " + ", ".join(f"{k}={v}" for k, v in cluster.settings.items()))


def run(args: argparse.Namespace, counts: list[int]) -> None:
    """Every window of one run, printed as it ends."""
    ensure_database()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        sites = [f"site-{i:02d}" for i in range(args.sites)]
        keys = {s: generate_keypair(tmp / "keys", s)[0] for s in sites}
        signers = {s: Signer.from_file(k) for s, k in keys.items()}
        centre_key, centre_pub = generate_keypair(tmp / "keys", "centre")
        assert centre_key == tmp / "keys" / "centre.key"
        (tmp / "sites.yaml").write_text(
            "sites:\n" + "".join(f"  {s}:\n    public_keys: [keys/{s}.pub]\n" for s in sites)
        )
        frames = build_frames(signers, args.readings, args.batch, args.points_per_site)
        print(f"{len(frames)} signed batches of {args.batch} readings from {len(sites)} sites; {load()}")
        bare = bare_copy(frames)
        n = len(frames) * args.batch
        print(f"{'baseline: bare binary COPY, 1 conn':34s} {n / bare:>10,.0f} readings/s ({bare:6.2f} s)  [{load()}]")
        runs: list[Run] = []
        with Mosquitto(tmp / "broker", persistence=False) as broker:
            assert wait_port(broker.port)
            if args.before is not None:
                for k in counts if args.before_all else counts[:1]:
                    runs.append(measure(f"receiver before, {k} process(es)", k, frames, args, tmp, broker, args.before))
                    print(runs[-1].line())
            for k in counts:
                runs.append(measure(f"receiver, {k} process(es) on $share", k, frames, args, tmp, broker, None))
                print(runs[-1].line())
            if args.uplink_readings:
                print(uplink(args.uplink_readings, keys[sites[0]], centre_pub, tmp, broker))
        new = [r for r in runs if r.label.startswith("receiver,")]
        for r in new:
            print(f"ratio {r.label} / bare COPY: {(r.n / r.seconds) / (n / bare):.2f}")
        for b in (r for r in runs if r.label.startswith("receiver before")):
            now = next(r for r in new if r.label.startswith(f"receiver, {b.label.split(', ')[1].split()[0]} "))
            print(f"ratio receiver now / before ({b.label.split(', ')[1]} each): {(now.n / now.seconds) / (b.n / b.seconds):.2f}")
        if len(new) > 1:
            print(f"ratio {new[-1].label} / {new[0].label}: {(new[-1].n / new[-1].seconds) / (new[0].n / new[0].seconds):.2f}")


if __name__ == "__main__":
    main()
