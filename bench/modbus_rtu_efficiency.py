"""RTU bus efficiency at 9600 baud 8N1: registers per second achieved / the line's theoretical maximum.

One emulated RS-485 line over a pseudo-terminal, answering at the line's byte timing (request and
answer time on the wire, 3.5-character end-of-frame detection, zero device turnaround), with a
station's worth of devices (2 x SDM630, 2 x SDM120, soil 7-in-1, XY-MD02, SUP-DO7013, ODO-CT).
The agent's bus polls every point class back to back. The theoretical maximum for the same request
mix is sum over transactions of (request + answer characters) x 10 bits / baud + 2 x t3.5: the
line is never idle except for the silences the protocol requires.

Baseline, same run: the same devices read one request per point (no block reads), as the peers do.

    PYTHONPATH=. /work/venv/bin/python bench/modbus_rtu_efficiency.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time

from drivers.modbus.bus import ModbusBus
from drivers.modbus.client import silence_s
from drivers.modbus.device import DeviceSettings, ModbusDevice
from drivers.modbus.emulator import EmulatedDevice, Emulator
from drivers.modbus.profile import load_profile
from drivers.transports import PtyTransport
from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.sink import ListSink
from kernel.source import RunContext

BAUD = 9600
STATION = [
    ("eastron-sdm630", 1),
    ("eastron-sdm630", 2),
    ("eastron-sdm120", 3),
    ("eastron-sdm120", 4),
    ("soil-7in1", 5),
    ("xy-md02", 6),
    ("supmea-do7013", 7),
    ("ysi-odo-ct", 8),
]


class CountingClient:
    """Wraps the bus client's read to record every transaction's register count."""

    def __init__(self, bus: ModbusBus) -> None:
        self.sizes: list[int] = []
        inner = bus.client.read

        async def read(unit, fc, address, count, timeout):
            values = await inner(unit, fc, address, count, timeout)
            self.sizes.append(count)
            return values

        bus.client.read = read  # type: ignore[method-assign]


def theoretical_s(sizes: list[int], transport_char: float, t35: float) -> float:
    """Line time the protocol needs for these reads (8-byte requests, 5 + 2n byte answers)."""
    return sum((8 + 5 + 2 * n) * transport_char + 2 * t35 for n in sizes)


async def run(seconds: float, one_per_point: bool) -> dict[str, float]:
    emu = Emulator()
    devices = [EmulatedDevice(load_profile(p), u, seed=u) for p, u in STATION]
    path = await emu.add_rtu_line(devices, BAUD)
    agent_devs = [
        ModbusDevice(
            load_profile(p),
            DeviceSettings(
                name=f"{p}-{u}",
                unit=u,
                timeout_s=0.5,
                fast_s=0.001,
                slow_s=0.001,
                max_gap=0 if one_per_point else None,
            ),
        )
        for p, u in STATION
    ]
    if one_per_point:
        for d in agent_devs:
            d.planner.max_registers = 4  # a float64 at most: every point is its own request
            d.planner.max_gap = -1
            d.planner._plans.clear()
    transport = PtyTransport(path, BAUD)
    bus = ModbusBus("bench", transport, agent_devs, "rtu")
    counter = CountingClient(bus)
    sink = ListSink()
    ctx = RunContext(site=None, sink=sink, clock=Clock(), metrics=Metrics(), log=logging.getLogger("bench"))  # type: ignore[arg-type]
    task = asyncio.create_task(bus.run(ctx))
    await asyncio.sleep(1.0)  # warm-up
    n0, s0, t0 = len(sink.readings), len(counter.sizes), time.monotonic()
    await asyncio.sleep(seconds)
    n1, s1, t1 = len(sink.readings), len(counter.sizes), time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await emu.close()
    sizes = counter.sizes[s0:s1]
    elapsed = t1 - t0
    ideal = theoretical_s(sizes, transport.char_time(), silence_s(transport))
    regs = sum(sizes)
    return {
        "elapsed_s": elapsed,
        "transactions": len(sizes),
        "registers_per_s": regs / elapsed,
        "theoretical_registers_per_s": regs / ideal,
        "efficiency": ideal / elapsed,
        "points_per_s": (n1 - n0) / elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    ours = asyncio.run(run(args.seconds, one_per_point=False))
    base = asyncio.run(run(args.seconds, one_per_point=True))
    print(f"RTU 9600 8N1, 8 devices on one pty line, {args.seconds:.0f} s each")
    for name, r in (("block reads (ours)", ours), ("one request per point (baseline)", base)):
        print(
            f"  {name:34s} {r['transactions'] / r['elapsed_s']:6.1f} req/s  {r['registers_per_s']:7.1f} reg/s  "
            f"theoretical {r['theoretical_registers_per_s']:7.1f} reg/s  efficiency {r['efficiency']:.3f}  "
            f"points {r['points_per_s']:6.1f}/s"
        )
    print(f"  ratio of points/s, ours / baseline: {ours['points_per_s'] / base['points_per_s']:.2f}")
    print(f"  bus efficiency (target >= 0.85): {ours['efficiency']:.3f}")


if __name__ == "__main__":
    main()
