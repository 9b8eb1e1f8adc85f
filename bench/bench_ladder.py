"""End-to-end ladder: the real ``edge-agent run`` against emulated Modbus TCP gateways, through
Mosquitto, to the real receiver on PostgreSQL; then the plateau under overload.

Layout: every device is one unit id (1..50 by default) behind an emulated Modbus TCP gateway (one port per
gateway, as a site's RS-485-to-TCP gateways or a PLC rack present them); the gateways are spread
over a few emulator processes (``--emulators``) so the emulators are not the bottleneck (their CPU
is printed beside every row). Each device has 50 uint16 holding registers (0..49) read in one
request and is polled every ``--poll`` s. The agent (subprocess, with its own store), a private
Mosquitto and one receiver (subprocess, a fresh PostgreSQL database) run as in production.

Per row: offered points/s (devices x 50 / poll), stored/s (the store's last seq), delivered/s
(rows the receiver committed in the window), agent CPU µs per stored point and % of a core (from
/proc/<pid>/stat), RSS and RSS per device, latency p50/p99 (reading timestamp to the receiver's
``received_at``), the backlog slope (least-squares slope of the store's pending count, readings/s),
and the load average. Plateau rows (``--plateau 1.5,3``) offer that multiple of the ladder's best
delivered rate with the same devices polled faster. After each window (``--drain``, on by default)
the devices are stopped, the agent empties its store into the centre, and every seq the store
issued (1..last) is looked up at the centre: the last column says how many are missing ("0 lost of
N"), or how many readings still waited for an ack when the drain timed out.

    PYTHONPATH=. .venv/bin/python bench/bench_ladder.py --devices 10,100,1000,2000 --window 60
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.modbus_tcp_throughput import write_profile
from bench.pg_cluster import PrivatePostgres
from hil.procs import REPO, Broker, ManagedProcess, agent_argv, agent_env, free_port
from hil.sources import proc_cpu_seconds, proc_rss_kib, store_state
from kernel.progress import Progress, Snapshot

POINTS = 50
SHARED_PG = "postgresql://127.0.0.1:5432"
PG = SHARED_PG  # the private cluster's address once started (``--pg private``, the default)
ADMIN_DB = "test"  # where CREATE DATABASE runs
SITE = "ladder-site"
SKIPPED = "kbe_modbus_polls_skipped_total"  # as /metrics exposes it (every name under the kbe_ prefix)


@dataclass
class Row:
    """One measured rung."""

    label: str
    devices: int
    poll_s: float
    offered: float
    stored: float
    delivered: float
    cpu_us_per_point: float
    cpu_pct: float
    rss_mib: float
    rss_kib_per_device: float
    p50_s: float
    p99_s: float
    backlog_slope: float
    backlog_end: int
    emulator_cpu_pct: float
    receiver_cpu_pct: float
    load: float
    stretch: float = 1.0
    stretch_min: float = 1.0  # over the window's looks at /metrics (every ``--metrics-s``)
    stretch_max: float = 1.0
    skipped_per_s: float = 0.0
    wait_pct: float = 0.0  # the agent's threads waiting for a core, % of the window
    pg_cpu_pct: float = 0.0  # the private PostgreSQL cluster (every backend and worker); 0 when shared
    busy_pct: float = 0.0  # the whole machine's CPU in use, % of all its cores
    accounted: str = "not checked"  # after the drain: every seq the store issued, found at the centre?


# -- emulator processes ------------------------------------------------------------------------------
async def serve(profile_path: Path, gateways: list[tuple[int, int]]) -> None:
    """Serve ``(port, units)`` gateways until SIGTERM (the ``--serve`` mode of this script)."""
    from drivers.modbus.emulator import EmulatedDevice, TcpServer
    from drivers.modbus.profile import load_profile

    profile = load_profile(profile_path)
    servers = []
    for port, units in gateways:
        # Values move every 5 s: a device's registers still change between polls, at a fifth of the cost.
        devs = [EmulatedDevice(profile, u, seed=port, update_every_s=5.0) for u in range(1, units + 1)]
        srv = TcpServer(devs, port=port)
        await srv.start()
        servers.append(srv)
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for srv in servers:
        await srv.stop()


def split_gateways(devices: int, per_gateway: int) -> list[tuple[int, int]]:
    """(port, units) per gateway: as few gateways as ``per_gateway`` units each allows, evenly filled."""
    n = max(1, math.ceil(devices / per_gateway))
    sizes = [devices // n + (1 if i < devices % n else 0) for i in range(n)]
    # free_port() may hand out a port twice (the OS reuses a port freed a moment ago): two gateways
    # on one port would put two devices at each unit id of one bus, which the site config refuses.
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return list(zip(ports, sizes, strict=True))


def start_emulators(
    work: Path, profile: Path, gateways: list[tuple[int, int]], processes: int
) -> list[ManagedProcess]:
    """Start the emulator processes; wait until each serves its gateways."""
    procs = []
    for i in range(min(processes, len(gateways))):
        mine = gateways[i::processes]
        spec = ",".join(f"{port}:{units}" for port, units in mine)
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(profile), spec]
        p = ManagedProcess(f"emulator{i}", argv, work / "logs" / f"emulator{i}.log", agent_env())
        p.start()
        procs.append(p)
    deadline = time.monotonic() + 60
    for p in procs:
        while "ready" not in p.tail(5):
            if not p.running() or time.monotonic() > deadline:
                raise SystemExit(f"emulator did not start:\n{p.tail()}")
            time.sleep(0.2)
    return procs


# -- site, receiver ----------------------------------------------------------------------------------
def site_config(
    work: Path, broker: str, profile: Path, gateways: list[tuple[int, int]], poll_s: float, max_outstanding: int = 1
) -> Path:
    """The agent's site config: every device a unit behind its gateway, ``max_outstanding`` requests
    in flight per gateway connection."""
    devices = [
        {
            "driver": "modbus",
            "name": f"g{g}-u{u}",
            "profile": str(profile),
            "unit": u,
            "line": {"type": "tcp", "host": "127.0.0.1", "port": port, "max_outstanding": max_outstanding},
            "poll": {"fast_s": poll_s, "slow_s": 3600},
            "timeout_s": 1.0,
        }
        for g, (port, units) in enumerate(gateways)
        for u in range(1, units + 1)
    ]
    cfg = {
        "version": 1,
        "site": {"id": SITE, "name": "ladder", "location": {"lat": 21.1861, "lon": 106.0763}},
        "devices": devices,
        "sync": {
            "broker": broker,
            "allow_plaintext": True,
            "centre_public_keys": [str(work / "keys" / "centre.pub")],
            "signing_key_file": str(work / "keys" / "site.key"),
            "reconnect_min_s": 0.2,
            "keepalive_s": 5,
        },
        "store": {"path": str(work / "agent" / "store.db"), "max_bytes": 8 * 2**30},
        "health": {"listen": f"127.0.0.1:{free_port()}"},
    }
    path = work / f"site-{len(devices)}-{poll_s:g}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def keys(work: Path) -> Path:
    """Site and centre key pairs; the receiver's site registry."""
    from sync.signing import generate_keypair

    _, pub = generate_keypair(work / "keys", "site")
    generate_keypair(work / "keys", "centre")
    sites = work / "sites.yaml"
    sites.write_text(yaml.safe_dump({"sites": {SITE: {"public_keys": [str(pub)]}}}))
    return sites


_PRIVATE: list[PrivatePostgres] = []  # the private cluster, once started


def start_private_pg() -> None:
    """Start the private, tuned PostgreSQL cluster; every rung's database is made there."""
    global PG, ADMIN_DB
    cluster = PrivatePostgres()
    cluster.start()
    atexit.register(cluster.stop)
    _PRIVATE.append(cluster)
    PG, ADMIN_DB = cluster.url, "postgres"
    print("centre database: private PostgreSQL cluster, " + ", ".join(f"{k}={v}" for k, v in cluster.settings.items()), flush=True)


def pg_cpu() -> float:
    """CPU seconds of the private cluster so far (0 on the shared server: its CPU is not told apart)."""
    return _PRIVATE[0].cpu_seconds() if _PRIVATE else 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


def pg(sql: str, db: str = "", args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the centre's PostgreSQL; rows if it returns any."""
    import psycopg

    db = db or ADMIN_DB

    with psycopg.connect(f"{PG}/{db}", autocommit=True) as conn:
        cur = conn.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


def delivered(db: str, t0: float, t1: float) -> tuple[int, float, float]:
    """(rows, p50, p99 latency in s) the receiver committed between wall times t0 and t1."""
    rows = pg(
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY received_at - ts), "
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY received_at - ts) "
        "FROM readings WHERE received_at >= %s AND received_at < %s",
        db,
        (t0, t1),
    )
    n, p50, p99 = rows[0]
    return int(n), float(p50 or math.nan), float(p99 or math.nan)


def start_py_spy(out: Path, pid: int, seconds: float, idle: bool = False) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` for ``seconds`` into collapsed stacks at ``out``: the thread holding the
    GIL (CPU), or with ``idle`` every thread at every sample (wall clock: what the event loop waits on)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    mode = ["--idle", "--threads"] if idle else ["--gil"]
    argv = [str(spy), "record", *mode, "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- one rung ----------------------------------------------------------------------------------------
def agent_metrics(listen: str) -> dict[str, float]:
    """The agent's /metrics summed per metric name (labels folded); {} when it does not answer."""
    import urllib.request

    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (t, pending) samples, per second."""
    if len(samples) < 2:
        return math.nan
    mt = sum(t for t, _ in samples) / len(samples)
    mv = sum(v for _, v in samples) / len(samples)
    den = sum((t - mt) ** 2 for t, _ in samples)
    return sum((t - mt) * (v - mv) for t, v in samples) / den if den else math.nan


def runqueue_wait_s(pid: int) -> float:
    """Seconds the threads of ``pid`` were ready to run but waited for a core (the second field of
    /proc/PID/task/TID/schedstat): time lost to a loaded machine, not to waiting on I/O."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def cpu_of(procs: list[ManagedProcess]) -> float:
    """Total CPU seconds of the running processes."""
    return sum(proc_cpu_seconds(p.pid) or 0.0 for p in procs if p.pid is not None)


def rung(args: argparse.Namespace, devices: int, poll_s: float, label: str, progress: Progress) -> Row:
    """Start everything for ``devices`` polled every ``poll_s``; measure one window; stop everything."""
    work = Path(tempfile.mkdtemp(prefix="kbe-ladder-"))
    db = f"ladder_{secrets.token_hex(4)}"
    pg(f'CREATE DATABASE "{db}"')
    started: list[ManagedProcess] = []
    try:
        sites = keys(work)
        profile = write_profile(work)
        gateways = split_gateways(devices, args.units_per_gateway)
        emulators = start_emulators(work, profile, gateways, args.emulators)
        started += emulators
        broker = Broker(work)
        broker.start()
        started.append(broker)
        receivers = []
        for i in range(args.receivers):  # one $share group: the broker gives each batch to one of them
            rx_argv = agent_argv(
                "receiver", "--broker", broker.url, "--allow-plaintext", "--db", f"{PG}/{db}",
                "--sites", str(sites), "--signing-key", str(work / "keys" / "centre.key"),
                "--client-id", f"ladder-rx-{i}",
            )  # fmt: skip
            receiver = ManagedProcess(f"receiver{i}", rx_argv, work / "logs" / f"receiver{i}.log", agent_env())
            receiver.start()
            started.append(receiver)
            receivers.append(receiver)
        cfg = site_config(work, broker.url, profile, gateways, poll_s, args.max_outstanding)
        agent = ManagedProcess("agent", agent_argv("run", "--config", str(cfg)), work / "logs" / "agent.log", agent_env())
        agent.start()
        started.append(agent)
        store = work / "agent" / "store.db"
        health = yaml.safe_load(cfg.read_text())["health"]["listen"]
        t_start = time.monotonic()
        total = args.warmup + args.window
        samples: list[tuple[float, int]] = []
        rss_max = 0
        measuring = False
        t0 = w0 = cpu0 = emu0 = rx0 = wait0 = 0.0
        spy: subprocess.Popen[bytes] | None = None
        seq0 = 0
        stretches: list[float] = []
        next_metrics = 0.0
        while True:
            now = time.monotonic()
            el = now - t_start
            if not agent.running():
                raise SystemExit(f"the agent exited:\n{agent.tail()}")
            if not measuring and el >= args.warmup:
                measuring = True
                t0, w0 = now, time.time()
                cpu0, emu0, rx0 = cpu_of([agent]), cpu_of(emulators), cpu_of(receivers)
                pg0, busy0 = pg_cpu(), machine_busy()
                wait0 = runqueue_wait_s(agent.pid or 0)
                seq0 = store_state(store).last_seq
                skipped0 = agent_metrics(health).get(SKIPPED, 0.0)
                if args.py_spy is not None:
                    spy = start_py_spy(
                        args.py_spy / f"{label.replace(' ', '-')}.txt", agent.pid or 0, args.window, args.py_spy_idle
                    )
            if measuring:
                st = store_state(store)
                samples.append((now, st.depth))
                rss_max = max(rss_max, proc_rss_kib(agent.pid or 0) or 0)
                if now >= next_metrics:  # /metrics costs the agent a little CPU: not at every sample
                    stretches.append(agent_metrics(health).get("kbe_acquisition_stretch", 1.0))
                    next_metrics = now + args.metrics_s
                progress.update(Snapshot(el, total, stored=st.last_seq, phase=label))
            if el >= total:
                break
            time.sleep(min(args.sample_s, max(total - el, 0.05)))
        t1, w1 = time.monotonic(), time.time()
        cpu = cpu_of([agent]) - cpu0
        wait = runqueue_wait_s(agent.pid or 0) - wait0
        emu = cpu_of(emulators) - emu0
        rx = cpu_of(receivers) - rx0
        pgc = pg_cpu() - pg0
        busy1 = machine_busy()
        busy = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1e-9)
        seq1 = store_state(store).last_seq
        m = agent_metrics(health)
        load = os.getloadavg()[0]
        time.sleep(2.0)  # rows received in the window may still be committing
        n, p50, p99 = delivered(db, w0, w1)
        if spy is not None:
            spy.wait(60)
        accounted = account(emulators, store, db, args.drain, label, progress) if args.drain > 0 else "not checked"
        dt = t1 - t0
        stored = seq1 - seq0
        return Row(
            label=label,
            devices=devices,
            poll_s=poll_s,
            offered=devices * POINTS / poll_s,
            stored=stored / dt,
            delivered=n / dt,
            cpu_us_per_point=cpu / max(stored, 1) * 1e6,
            cpu_pct=100 * cpu / dt,
            rss_mib=rss_max / 1024,
            rss_kib_per_device=rss_max / devices,
            p50_s=p50,
            p99_s=p99,
            backlog_slope=slope(samples),
            backlog_end=samples[-1][1] if samples else 0,
            emulator_cpu_pct=100 * emu / dt,
            receiver_cpu_pct=100 * rx / dt,
            load=load,
            stretch=m.get("kbe_acquisition_stretch", 1.0),
            stretch_min=min(stretches, default=1.0),
            stretch_max=max(stretches, default=1.0),
            skipped_per_s=(m.get(SKIPPED, 0.0) - skipped0) / dt,
            wait_pct=100 * wait / dt,
            pg_cpu_pct=100 * pgc / dt,
            busy_pct=100 * busy,
            accounted=accounted,
        )
    finally:
        for p in reversed(started):
            p.stop(15.0)
        with contextlib.suppress(Exception):
            pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)


def account(
    emulators: list[ManagedProcess], store: Path, db: str, drain_s: float, label: str, progress: Progress
) -> str:
    """Stop the devices, let the agent empty its store into the centre (at most ``drain_s``), then
    compare every seq the store issued with the rows the receivers committed: "0 lost of N" when
    each of seqs 1..N is at the centre; how many are missing otherwise; "N not drained" when
    readings were still waiting for an ack (nothing can be said of them yet)."""
    for emulator in emulators:
        emulator.stop(10.0)
    t0 = time.monotonic()
    state = store_state(store)
    while state.depth and time.monotonic() - t0 < drain_s:
        progress.update(Snapshot(time.monotonic() - t0, drain_s, phase=f"{label}: drain, {state.depth:,} waiting"))
        time.sleep(1.0)
        state = store_state(store)
    time.sleep(2.0)  # the last acked batch is committed before its ack; its rows are visible now
    last = state.last_seq
    at_centre = pg(
        "SELECT count(DISTINCT seq) FROM readings WHERE site_id = %s AND seq BETWEEN 1 AND %s", db, (SITE, last)
    )[0][0]
    if state.depth:
        return f"{state.depth:,} not drained in {drain_s:g} s"
    return f"{last - int(at_centre):,} lost of {last:,} (drained in {time.monotonic() - t0:.0f} s)"


# -- output ------------------------------------------------------------------------------------------
HEADER = (
    "| rung | devices x 50 @ poll | offered pts/s | stored pts/s | delivered pts/s | agent µs CPU/pt "
    "| agent CPU % | RSS MiB | RSS KiB/device | latency p50 / p99 s | backlog slope /s | emulators CPU % "
    "| receiver CPU % | PostgreSQL CPU % | machine busy % | poll stretch at the end (min-max) | polls skipped /s "
    "| agent waiting for a core % | load avg | every seq at the centre after the drain |"
)


def md(r: Row) -> str:
    """One markdown row."""
    return (
        f"| {r.label} | {r.devices:,} @ {r.poll_s:g} s | {r.offered:,.0f} | {r.stored:,.0f} | **{r.delivered:,.0f}** "
        f"| {r.cpu_us_per_point:.1f} | {r.cpu_pct:.0f} | {r.rss_mib:.1f} | {r.rss_kib_per_device:.1f} "
        f"| {r.p50_s:.2f} / {r.p99_s:.2f} | {r.backlog_slope:+,.0f} | {r.emulator_cpu_pct:.0f} "
        f"| {r.receiver_cpu_pct:.0f} | {r.pg_cpu_pct:.0f} | {r.busy_pct:.0f} | {r.stretch:.2f} ({r.stretch_min:.2f}-{r.stretch_max:.2f}) | {r.skipped_per_s:,.0f} | {r.wait_pct:.0f} | {r.load:.1f} | {r.accounted} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--devices", default="10,100,1000,2000", help="ladder rungs (device counts)")
    ap.add_argument("--poll", type=float, default=1.0, help="poll period of the ladder (s)")
    ap.add_argument("--plateau", default="1.5,3", help="overload factors of the best delivered rate ('' for none)")
    ap.add_argument("--plateau-devices", type=int, default=0, help="devices of the plateau rows (default: the largest rung)")
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--sample-s", type=float, default=3.0, help="seconds between looks at the store")
    ap.add_argument("--metrics-s", type=float, default=10.0, help="seconds between looks at the agent's /metrics (stretch range)")
    ap.add_argument("--emulators", type=int, default=2, help="emulator processes")
    ap.add_argument("--units-per-gateway", type=int, default=50, help="devices behind one Modbus TCP port (<= 247)")
    ap.add_argument("--max-outstanding", type=int, default=1, help="pipelined Modbus TCP requests per gateway connection")
    ap.add_argument("--py-spy", type=Path, default=None, help="record the agent with py-spy over each window (collapsed stacks here)")
    ap.add_argument("--py-spy-idle", action="store_true", help="with --py-spy: sample idle threads too (wall clock)")
    ap.add_argument("--peer", default="", help="device counts to run ThingsBoard IoT Gateway at, e.g. 10,100")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    ap.add_argument("--drain", type=float, default=120.0,
                    help="after each window stop the devices, wait up to this many s for the store to empty, "
                         "and check every seq it issued is at the centre (0: skip)")
    ap.add_argument(
        "--receivers", type=int, default=1, help="receiver processes in one $share group (a centre scales out so)"
    )
    ap.add_argument(
        "--pg",
        choices=("private", "shared"),
        default="private",
        help="the centre's database: a private cluster tuned as a DBA would (bench/pg_cluster.py), or the "
        "machine's shared PostgreSQL on 127.0.0.1:5432 with its packaged settings",
    )
    ap.add_argument("--serve", nargs=2, metavar=("PROFILE", "PORT:UNITS,..."), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        gws = [(int(a), int(b)) for a, b in (x.split(":") for x in args.serve[1].split(","))]
        asyncio.run(serve(Path(args.serve[0]), gws))
        return
    # Stopped from outside (SIGTERM, or SIGINT in a background job): stop what each rung started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    progress = Progress("ladder", every_s=30.0)
    rows: list[Row] = []
    if args.pg == "private":
        start_private_pg()
    print(
        f"bench_ladder: {REPO.name}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"{args.receivers} receiver process(es)",
        flush=True,
    )
    print(HEADER, flush=True)
    print("|" + "---|" * (HEADER.count("|") - 1), flush=True)
    for n in [int(x) for x in args.devices.split(",") if x]:
        rows.append(rung(args, n, args.poll, f"ladder {n}", progress))
        print(md(rows[-1]), flush=True)
    factors = [float(x) for x in args.plateau.split(",") if x]
    if factors and rows:
        ceiling = max(rows, key=lambda r: r.delivered)
        n = args.plateau_devices or max(r.devices for r in rows)
        for f in factors:
            poll = round(n * POINTS / (ceiling.delivered * f), 3)
            rows.append(rung(args, n, poll, f"plateau x{f:g}", progress))
            print(md(rows[-1]), flush=True)
        plateau = [r for r in rows if r.label.startswith("plateau")]
        for r in plateau:
            print(
                f"{r.label}: offered {r.offered / ceiling.delivered:.2f}x the ceiling ({ceiling.delivered:,.0f}/s), "
                f"delivered {r.delivered / ceiling.delivered:.2f}x (target >= 0.90), load {r.load:.1f}"
            )
    if args.peer:
        compare_peer(args, rows)
    progress.close()


def compare_peer(args: argparse.Namespace, rows: list[Row]) -> None:
    """Run the peer harness at the given device counts (same keys and poll); print it beside ours."""
    from bench.modbus_tcp_throughput import peer

    counts = [int(x) for x in args.peer.split(",") if x]
    load0 = os.getloadavg()[0]
    theirs = peer(10.0, min(args.window, 30.0), counts, int(args.poll * 1000))
    print(f"ThingsBoard IoT Gateway 3.8.5, {POINTS} keys per device @ {args.poll:g} s (load {load0:.1f} -> {os.getloadavg()[0]:.1f})")
    for n in counts:
        t = theirs.get(n)
        if not isinstance(t, dict):
            print(f"| ThingsBoard GW, {n} devices | {n * POINTS / args.poll:,.0f} offered | {t or 'no result'} |")
            continue
        if t["points_per_s"] <= 0:
            print(
                f"| ThingsBoard GW, {n} devices | {t['offered']:,.0f} offered | 0 delivered in the window "
                f"(its Modbus side: {t['requests_per_s']:,.0f} one-register requests/s) | {t['cpu_pct']:.0f} % "
                f"| {t['rss_mib']:.1f} MiB |"
            )
            continue
        us = t["cpu_s_per_1m"]
        print(
            f"| ThingsBoard GW, {n} devices | {t['offered']:,.0f} offered | **{t['points_per_s']:,.0f}** delivered "
            f"| {us:.1f} µs CPU/pt | {t['cpu_pct']:.0f} % | {t['rss_mib']:.1f} MiB | {t['rss_mib'] * 1024 / n:.1f} KiB/device |"
        )
        ours = next((r for r in rows if r.devices == n and r.label.startswith("ladder")), None)
        if ours is not None:
            print(
                f"    {n} devices: delivered ours/theirs {ours.delivered / max(t['points_per_s'], 1e-9):.1f}x, "
                f"CPU per point theirs/ours {us / ours.cpu_us_per_point:.1f}x, RSS per device theirs/ours "
                f"{t['rss_mib'] * 1024 / n / ours.rss_kib_per_device:.2f}x"
            )


if __name__ == "__main__":
    main()
