"""Modbus TCP throughput: 100 emulated devices x 50 points into the SQLite store, and the same
workload through ThingsBoard IoT Gateway (peer harness in /work/shared/peers/thingsboard-gateway),
in one run.

Workload (the peer harness's own shape): one Modbus TCP endpoint with unit ids 1..100, each with
50 uint16 holding registers at 0..49, polled every 100 ms (50,000 values/s offered). Ours: the
agent's bus scheduler + StoreWriter + Store (WAL, synchronous=FULL) in this process; the emulator
(`edge-agent modbus emulate`) in a subprocess. CPU is this process's CPU time (all threads) over the
measuring window. Theirs: gateway -> Mosquitto -> counter, as the harness measures it (its own
emulator; gateway CPU from /proc).

    PYTHONPATH=. /work/venv/bin/python bench/modbus_tcp_throughput.py [--window 20] [--no-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from agent.writer import StoreWriter
from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.profile import load_profile
from drivers.transports import TcpTransport
from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.source import RunContext
from sync.store import Store

REPO = Path(__file__).resolve().parent.parent
PEER = Path("/work/shared/peers/thingsboard-gateway")
DEVICES, POINTS, POLL_MS = 100, 50, 100


def write_profile(tmp: Path) -> Path:
    points = [
        {
            "name": f"k{i}",
            "table": "holding_register",
            "address": i,
            "type": "uint16",
            "emulate": {"kind": "noise", "value": 30000, "amplitude": 20000},
        }
        for i in range(POINTS)
    ]
    path = tmp / "bench50.yaml"
    path.write_text(yaml.safe_dump({"model": "Bench50", "sources": ["bench"], "points": points}))
    return path


def start_emulator(profile: Path, port: int, devices: int = DEVICES) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "agent", "modbus", "emulate", "--tcp", str(port)]
    for _ in range(devices):
        argv += ["--profile", str(profile)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # "modbus tcp on port ..."
    return proc


async def ours(
    profile: Path, port: int, tmp: Path, warmup: float, window: float, poll_s: float, devices: int = DEVICES
) -> dict[str, float]:
    prof = load_profile(profile)
    devs = [
        ModbusDevice(prof, DeviceSettings(name=f"dev{u}", unit=u, timeout_s=1.0, fast_s=poll_s, slow_s=3600))
        for u in range(1, devices + 1)
    ]
    metrics = Metrics()
    store = Store(tmp / f"store-{poll_s}-{devices}.db", "bench", max_bytes=4 * 2**30, metrics=metrics)
    writer = StoreWriter(store, metrics)
    bus = ModbusBus("bench", TcpTransport("127.0.0.1", port), devs, "tcp")
    ctx = RunContext(site=None, sink=writer, clock=Clock(), metrics=metrics, log=logging.getLogger("bench"))  # type: ignore[arg-type]
    wtask = asyncio.create_task(writer.run())
    btask = asyncio.create_task(bus.run(ctx))
    await asyncio.sleep(warmup)
    c0, p0, t0 = writer.committed, time.process_time(), time.monotonic()
    await asyncio.sleep(window)
    c1, p1, t1 = writer.committed, time.process_time(), time.monotonic()
    for task in (btask, wtask):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    store.close()
    points = c1 - c0
    return {
        "points_per_s": points / (t1 - t0),
        "cpu_s_per_1m": (p1 - p0) / max(points, 1) * 1e6,
        "cpu_pct": (p1 - p0) / (t1 - t0) * 100,
        "offered": devices * POINTS / poll_s,
    }


def peer(
    warmup: float, window: float, device_counts: list[int], poll_ms: int = POLL_MS
) -> dict[int, dict[str, float] | str]:
    """Run the peer harness once for every device count; results (or the error) by device count."""
    results = Path(os.environ.get("PEER_WORK", "~/.cache/kbe-peer-tb")).expanduser() / "results"
    before = set(results.glob("*/summary.json"))
    grid = ",".join(f"{POINTS}:{poll_ms}:{n}" for n in device_counts)
    cmd = [
        str(PEER / "run.sh"),
        "--grid",
        grid,
        "--outage",
        "",
        "--warmup",
        str(warmup),
        "--window",
        str(window),
    ]
    print("running peer:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    after = set(results.glob("*/summary.json")) - before
    out: dict[int, dict[str, float] | str] = {}
    if not after:
        return out
    run_dir = sorted(after)[-1].parent
    for res in json.loads((run_dir / "summary.json").read_text())["results"]:
        n = int(res["devices"])
        if "error" in res:
            # It delivered nothing; its Modbus request rate (one register per request) bounds what it could.
            stats = run_dir / f"throughput_k{POINTS}_p{poll_ms}_d{n}" / "emulator_stats.json"
            rate = ""
            if stats.is_file():
                per_s = list(json.loads(stats.read_text()).get("requests_per_second", {}).values())[-20:]
                if per_s:
                    rate = f"; it was reading {sum(per_s) / len(per_s):.0f} registers/s (one per request)"
            out[n] = f"{res['error']}{rate}"
            continue
        vps = res["values_per_s"]
        cpu = res["gateway"]["cpu_pct"]
        out[n] = {
            "points_per_s": vps,
            "cpu_pct": cpu,
            "cpu_s_per_1m": cpu / 100 / max(vps, 1e-9) * 1e6,
            "offered": res["offered_values_per_s"],
            "requests_per_s": res["modbus_requests_per_s"],
            "rss_mib": float(res["gateway"].get("rss_mib_max", float("nan"))),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    counts = [DEVICES, 10]
    mine: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        profile = write_profile(tmp)
        for n in counts:
            with socket_port() as port:
                emu = start_emulator(profile, port, n)
                try:
                    mine[n] = asyncio.run(
                        ours(profile, port, tmp, args.warmup, args.window, POLL_MS / 1000, n)
                    )
                finally:
                    emu.terminate()
                    emu.wait(10)
    theirs = {} if args.no_peer else peer(max(args.warmup, 10.0), args.window, counts)
    print(f"Modbus TCP, N devices x {POINTS} points (uint16 HR 0..49) behind one endpoint, poll {POLL_MS} ms")
    row = "  {:46s} {:>9.0f} points/s  CPU {:6.1f} % of a core  {:7.2f} CPU s per 1M points"
    for n in counts:
        r = mine[n]
        print(
            row.format(
                f"ours, {n} devices (offered {r['offered']:.0f}/s)",
                r["points_per_s"],
                r["cpu_pct"],
                r["cpu_s_per_1m"],
            )
        )
        t = theirs.get(n)
        if isinstance(t, dict):
            print(
                row.format(
                    f"ThingsBoard GW 3.8.5, {n} devices", t["points_per_s"], t["cpu_pct"], t["cpu_s_per_1m"]
                )
            )
            print(
                f"    throughput ours/theirs: {r['points_per_s'] / max(t['points_per_s'], 1e-9):.1f}x (target >= 5); "
                f"CPU per point theirs/ours: {t['cpu_s_per_1m'] / r['cpu_s_per_1m']:.1f}x (target >= 1)"
            )
        elif t is not None:
            print(f"  ThingsBoard GW 3.8.5, {n} devices: {t}")


@contextlib.contextmanager
def socket_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    yield port


if __name__ == "__main__":
    main()
