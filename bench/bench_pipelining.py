"""Modbus TCP pipelining on the acquisition path alone: points/s and CPU per point at each
``max_outstanding``, against the depth-1 bus (one request at a time) in the same run.

The agent's bus schedulers (one per emulated gateway, in this process) poll devices of 50 uint16
points behind the gateways of ``bench_ladder.py --serve`` (one subprocess, its CPU not counted) as
often as they can (poll period 1 ms) into a sink that only counts. Depths are measured in turn,
twice each (A B A B), so a change of the machine's load falls on every depth alike; the agent's
wait for a core (schedstat) is printed beside each, as on this shared machine it bounds everything.

    PYTHONPATH=. .venv/bin/python bench/bench_pipelining.py [--devices 1400] [--outstanding 1,8] [--window 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_acquisition import CountingSink
from bench.bench_ladder import runqueue_wait_s, split_gateways, start_emulators
from bench.modbus_tcp_throughput import write_profile
from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.profile import load_profile
from drivers.transports import TcpTransport
from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.source import RunContext


async def measure(profile: Path, gateways: list[tuple[int, int]], window: float, depth: int) -> tuple[float, float, float]:
    """(points/s, µs of this process's CPU per point, % of the window waiting for a core) at ``depth``."""
    p = load_profile(profile)
    sink = CountingSink()
    ctx = RunContext(site=None, sink=sink, clock=Clock(), metrics=Metrics(), log=logging.getLogger("bench"))  # type: ignore[arg-type]
    buses = []
    for g, (port, units) in enumerate(gateways):
        devs = [
            ModbusDevice(p, DeviceSettings(name=f"g{g}-u{u}", unit=u, timeout_s=1.0, fast_s=0.001, slow_s=3600))
            for u in range(1, units + 1)
        ]
        buses.append(ModbusBus(f"g{g}", TcpTransport("127.0.0.1", port), devs, "tcp", max_outstanding=depth))
    tasks = [asyncio.create_task(b.run(ctx)) for b in buses]
    await asyncio.sleep(2.0)
    n0, c0, t0, w0 = sink.points, time.process_time(), time.monotonic(), runqueue_wait_s(os.getpid())
    await asyncio.sleep(window)
    n1, c1, t1, w1 = sink.points, time.process_time(), time.monotonic(), runqueue_wait_s(os.getpid())
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    n = max(n1 - n0, 1)
    return n / (t1 - t0), (c1 - c0) / n * 1e6, 100 * (w1 - w0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--devices", type=int, default=1400)
    ap.add_argument("--units-per-gateway", type=int, default=50)
    ap.add_argument("--outstanding", default="1,8", help="depths to compare (the first is the baseline)")
    ap.add_argument("--window", type=float, default=10.0)
    args = ap.parse_args()
    depths = [int(x) for x in args.outstanding.split(",") if x]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        profile = write_profile(work)
        gateways = split_gateways(args.devices, args.units_per_gateway)
        (emu,) = start_emulators(work, profile, gateways, 1)
        got: dict[int, list[tuple[float, float, float, float]]] = {k: [] for k in depths}
        try:
            for _ in range(2):
                for depth in depths:
                    rate, us, wait = asyncio.run(measure(profile, gateways, args.window, depth))
                    got[depth].append((rate, us, wait, os.getloadavg()[0]))
        finally:
            emu.stop()
    base = sum(r for r, *_ in got[depths[0]]) / 2
    print(f"| max_outstanding | points/s | µs CPU/point | waiting for a core % | vs depth {depths[0]} | load avg |")
    print("|---|---|---|---|---|---|")
    for depth in depths:
        runs = got[depth]
        rate = sum(r[0] for r in runs) / 2
        print(
            f"| {depth} | **{rate:,.0f}** | {sum(r[1] for r in runs) / 2:.1f} | {sum(r[2] for r in runs) / 2:.0f} "
            f"| {rate / base:.2f}x | {' / '.join(f'{r[3]:.1f}' for r in runs)} |"
        )
    print(f"{args.devices} devices x 50 points behind {len(gateways)} gateways, {args.window:g} s per measurement, A B A B")


if __name__ == "__main__":
    main()
