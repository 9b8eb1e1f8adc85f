"""Agent CPU per point on the acquisition path alone: Modbus TCP polls, decoding, readings, the sink.

The agent's bus schedulers (one per emulated gateway, in this process) poll devices of 50 uint16
points behind emulated gateways (``bench_ladder.py --serve``, a subprocess, its CPU not counted),
into a sink that only counts. Every device is polled as often as the buses can (poll period 1 ms),
so the figure is the cost per point at full speed. Baseline in the same run: the same buses with
the per-point decoder (``ModbusDevice.decode_points``: one decoder call and one ``Reading()`` per
point), which is the path before the block decoder.

    PYTHONPATH=. .venv/bin/python bench/bench_acquisition.py [--devices 200] [--window 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_ladder import split_gateways, start_emulators
from bench.modbus_tcp_throughput import write_profile
from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.profile import load_profile
from drivers.transports import TcpTransport
from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.readings import Reading
from kernel.source import RunContext


class CountingSink:
    """Counts what acquisition hands over."""

    def __init__(self) -> None:
        self.points = 0

    async def put(self, readings: Sequence[Reading]) -> None:
        """Count the readings."""
        self.points += len(readings)


async def measure(profile: Path, gateways: list[tuple[int, int]], window: float, per_point: bool, prof: Path | None) -> float:
    """µs of this process's CPU per point over ``window`` seconds of polling."""
    p = load_profile(profile)
    sink = CountingSink()
    ctx = RunContext(site=None, sink=sink, clock=Clock(), metrics=Metrics(), log=logging.getLogger("bench"))  # type: ignore[arg-type]
    buses = []
    for g, (port, units) in enumerate(gateways):
        devs = []
        for u in range(1, units + 1):
            d = ModbusDevice(p, DeviceSettings(name=f"g{g}-u{u}", unit=u, timeout_s=1.0, fast_s=0.001, slow_s=3600))
            if per_point:
                d.decode = d.decode_points  # type: ignore[method-assign]
            devs.append(d)
        buses.append(ModbusBus(f"g{g}", TcpTransport("127.0.0.1", port), devs, "tcp"))
    tasks = [asyncio.create_task(b.run(ctx)) for b in buses]
    await asyncio.sleep(2.0)
    profiler = cProfile.Profile() if prof is not None else None
    n0, c0, t0 = sink.points, time.process_time(), os.times()
    if profiler is not None:
        profiler.enable()
    await asyncio.sleep(window)
    if profiler is not None:
        profiler.disable()
    n1, c1, t1 = sink.points, time.process_time(), os.times()
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    if profiler is not None and prof is not None:
        pstats.Stats(profiler, stream=prof.open("w")).sort_stats("tottime").print_stats(40)
    n = max(n1 - n0, 1)
    print(
        f"  {'per-point (baseline)' if per_point else 'block decoder'}: {n1 - n0:,} points in {window:.0f} s, "
        f"user {(t1.user - t0.user) / n * 1e6:.2f} + system {(t1.system - t0.system) / n * 1e6:.2f} µs/point",
        flush=True,
    )
    return (c1 - c0) / max(n1 - n0, 1) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--units-per-gateway", type=int, default=50)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--cprofile", type=Path, default=None, help="write cProfile stats of the new path here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        profile = write_profile(work)
        gateways = split_gateways(args.devices, args.units_per_gateway)
        (emu,) = start_emulators(work, profile, gateways, 1)
        try:
            load0 = os.getloadavg()[0]
            base = asyncio.run(measure(profile, gateways, args.window, True, None))
            new = asyncio.run(measure(profile, gateways, args.window, False, args.cprofile))
            load1 = os.getloadavg()[0]
        finally:
            emu.stop()
    print(
        f"acquisition, {args.devices} devices x 50 points: block decoder {new:.2f} µs CPU/point, "
        f"per-point baseline {base:.2f} µs/point, ratio {base / new:.2f}x (load average {load0:.1f} -> {load1:.1f})"
    )


if __name__ == "__main__":
    main()
