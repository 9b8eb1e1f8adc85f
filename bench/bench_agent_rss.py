"""Agent memory and CPU with 50 Modbus devices configured, syncing to a receiver.

    .venv/bin/python bench/bench_agent_rss.py [--devices 50] [--seconds 60] [--compare CHECKOUT]

Starts a Modbus TCP emulator with N devices (SDM120 profile, one unit id each, behind one gateway
as at a cabinet, polled every second), a private Mosquitto, the reference receiver and
`edge-agent run`, lets it settle, then samples the agent's RSS and CPU from /proc for the measuring
window. Baseline in the same run: the RSS of a bare `python -c "import time; time.sleep(5)"`, and
the RSS of the agent with no devices (import footprint), and with ``--compare`` the same site run
from another checkout (e.g. the tree before a change), so a before/after ratio comes from one run;
``--compare-env KBE_HANDOVER=0`` alone compares with this checkout's agent run in the checking process.
RSS is the kernel's resident set (``/proc/<pid>/statm``: shared library pages count in full); PSS
(``smaps_rollup``, shared pages split between the processes mapping them) is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from drivers.modbus.emulator import EmulatedDevice, Emulator
from drivers.modbus.profile import load_profile
from hil.procs import Broker, ManagedProcess, ProcessSet, agent_argv, agent_env
from kernel.progress import Progress, Snapshot
from sync.signing import generate_keypair

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def pss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def bare_python_rss() -> float:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    time.sleep(1.5)
    value = rss_mb(p.pid)
    p.wait()
    return value


def site(work: Path, key: Path, broker: str, port: int, n: int) -> Path:
    devices = [
        {
            "driver": "modbus",
            "name": f"meter-{u:02d}",
            "profile": "eastron-sdm120",
            "unit": u,
            "line": {"type": "tcp", "host": "127.0.0.1", "port": port},
            "poll": {"fast_s": 1.0, "slow_s": 10.0},
        }
        for u in range(1, n + 1)
    ]
    cfg = {
        "site": {"id": "bench-rss", "name": "RSS bench", "location": {"lat": 21.19, "lon": 106.08}},
        "devices": devices,
        "sync": {
            "broker": broker,
            "allow_plaintext": True,
            "centre_public_keys": [str(key.parent / "centre.pub")],
            "signing_key_file": str(key),
            "batch": {"max_age_s": 1.0},
        },
        "store": {"path": str(work / "store.db")},
        "health": {"listen": None},
    }
    path = work / f"site-{n}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def measure(
    argv: list[str], log: Path, settle: float, window: float, env: dict[str, str] | None = None
) -> tuple[float, float, float, float]:
    """(last RSS, peak RSS, CPU fraction, last PSS) of the agent over the window after settling."""
    proc = ManagedProcess("agent", argv, log, env or agent_env())
    progress = Progress(f"bench agent-rss {log.stem}")
    proc.start()
    try:
        start = time.monotonic()
        while time.monotonic() - start < settle:
            progress.update(Snapshot(time.monotonic() - start, settle + window, phase="settle"))
            time.sleep(1.0)
        pid = proc.pid
        assert pid is not None
        c0, t0 = cpu_s(pid), time.monotonic()
        peak = 0.0
        samples = []
        while time.monotonic() - t0 < window:
            r = rss_mb(pid)
            samples.append(r)
            peak = max(peak, r)
            progress.update(Snapshot(time.monotonic() - start, settle + window, phase=f"measure {r:.1f} MB"))
            time.sleep(1.0)
        progress.close()
        cpu = (cpu_s(pid) - c0) / (time.monotonic() - t0)
        return samples[-1], peak, cpu, pss_mb(pid)
    finally:
        proc.stop()


class Meters:
    """``devices`` emulated SDM120 meters behind one Modbus TCP gateway, on an event loop in a thread."""

    def __init__(self, devices: int) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.emu = Emulator()
        self.profile = load_profile("eastron-sdm120")
        meters = [EmulatedDevice(self.profile, u, seed=u) for u in range(1, devices + 1)]
        self.port = asyncio.run_coroutine_threadsafe(self.emu.add_tcp(meters), self.loop).result(10)

    def close(self) -> None:
        """Stop the gateway."""
        asyncio.run_coroutine_threadsafe(self.emu.close(), self.loop).result(10)


def start_centre(work: Path, procs: ProcessSet) -> tuple[Path, Broker]:
    """A broker and the reference receiver (SQLite) for the site ``bench-rss``, logs in ``work/logs``;
    returns the site's signing key and the broker."""
    (work / "logs").mkdir()
    broker = procs.add(Broker(work))
    broker.start()
    key, pub = generate_keypair(work / "keys", "site")
    centre_key, _centre_pub = generate_keypair(work / "keys", "centre")
    sites = work / "sites.yaml"
    sites.write_text(yaml.safe_dump({"sites": {"bench-rss": {"public_keys": [str(pub)]}}}))
    rx = procs.add(
        ManagedProcess(
            "receiver",
            agent_argv(
                "receiver",
                "--broker",
                broker.url,
                "--db",
                f"sqlite:///{work / 'centre.db'}",
                "--sites",
                str(sites),
                "--signing-key",
                str(centre_key),
                "--allow-plaintext",
            ),
            work / "logs" / "receiver.log",
            agent_env(),
        )
    )
    rx.start()
    return key, broker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--settle", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--compare", type=Path, help="another checkout to run the same site from (baseline)")
    ap.add_argument(
        "--compare-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the baseline run; without --compare, the baseline is this checkout with it "
        "(--compare-env KBE_HANDOVER=0: the agent in the checking process, pydantic resident)",
    )
    args = ap.parse_args()
    meters = Meters(args.devices)
    profile, port = meters.profile, meters.port
    procs = ProcessSet()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            key, broker = start_centre(work, procs)
            bare = bare_python_rss()
            empty_last, _empty_peak, _empty_cpu, _empty_pss = measure(
                agent_argv("run", "--config", str(site(work, key, broker.url, port, 0))),
                work / "logs" / "agent0.log",
                5.0,
                5.0,
            )
            load_before = os.getloadavg()[0]
            last, peak, cpu, pss = measure(
                agent_argv("run", "--config", str(site(work, key, broker.url, port, args.devices))),
                work / "logs" / "agent.log",
                args.settle,
                args.seconds,
            )
            other = None
            if args.compare is not None or args.compare_env:
                env = agent_env()
                env.update(item.split("=", 1) for item in args.compare_env)
                (work / "compare").mkdir()
                argv = agent_argv("run", "--config", str(site(work / "compare", key, broker.url, port, args.devices)))
                if args.compare is not None:
                    env["PYTHONPATH"] = str(args.compare.resolve())
                    argv = [argv[0], "-P", *argv[1:]]  # -P: the current directory must not shadow that checkout
                other = measure(argv, work / "logs" / "agent-compare.log", args.settle, args.seconds, env)
            points = sum(1 for _ in profile.points)
            print(
                f"devices: {args.devices} x eastron-sdm120 ({points} points), polled every 1 s (fast class)"
            )
            load = os.getloadavg()
            print(f"load average {load_before:.2f} at start, now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
            print(f"agent RSS with {args.devices} devices: {last:.1f} MB (peak {peak:.1f} MB; PSS {pss:.1f} MB)")
            print(f"agent RSS with no devices:   {empty_last:.1f} MB (import footprint)")
            print(f"bare python RSS (baseline):  {bare:.1f} MB")
            print(f"ratio agent/bare python:     {peak / bare:.2f}")
            print(f"agent CPU: {cpu * 100:.1f} % of one core")
            if other is not None:
                baseline = " ".join([str(args.compare or "this checkout"), *args.compare_env])
                print(f"same site from {baseline}: RSS {other[0]:.1f} MB (peak {other[1]:.1f} MB; "
                      f"PSS {other[3]:.1f} MB), CPU {other[2] * 100:.1f} %; ratio this/that {peak / other[1]:.3f}")
            print(f"target RSS <= 40 MB: {'met' if peak <= 40 else 'NOT met'}")
        finally:
            procs.stop_all()
            meters.close()


if __name__ == "__main__":
    main()
