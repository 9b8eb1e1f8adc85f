"""Bus scan time for one RS-485 line against the line's own limit.

Run: PYTHONPATH=. .venv/bin/python bench/bench_scan.py [--units 1-247] [--bauds 9600,19200,38400]
One emulated line on a pty with four devices at 9600 baud (unit ids 1, 7, 12, 200); the scan walks
unit ids 1 to 247 at three baud rates (741 probes) with the default 50 ms turnaround margin and
identifies what answers. The baseline is the line's own limit, computed in the same run from what
the scan put on the wire: per probe the 3.5-character silence, the request, then the answer or the
whole timeout (frames at the baud rate plus the margin). The ratio of the walk (the scan less the
time spent identifying the devices found, printed apart) to that limit is what the scanner, the
pty and the event loop add on top.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from drivers.modbus.emulator import EmulatedDevice
from drivers.modbus.profile import load_profile
from provisioning.scan import Scanner, ScanOptions
from provisioning.scan_cli import parse_bauds, parse_units
from provisioning.scan_rig import start_scan_line, stop_scan_line


async def main(units: list[int], bauds: list[int]) -> None:
    devices = [
        (EmulatedDevice(load_profile("eastron-sdm120"), 1), 9600),
        (EmulatedDevice(load_profile("xy-md02"), 7), 9600),
        (EmulatedDevice(load_profile("soil-7in1"), 12), 9600),
        (EmulatedDevice(load_profile("eastron-sdm630"), 200), 9600),
    ]
    line = await start_scan_line(devices)
    try:
        t0 = time.monotonic()
        result = await Scanner(ScanOptions(line.pair.path, bauds=bauds, units=units)).run()
        elapsed = time.monotonic() - t0
    finally:
        await stop_scan_line(line)
    found = {d.unit: d.profile for d in result.devices}
    print(f"units {units[0]}-{units[-1]} x bauds {bauds}: {result.probes} probes, found {found}")
    walk = elapsed - result.identify_s
    print(
        f"scan {elapsed:.1f} s (walk {walk:.1f} s, identifying {len(found)} devices {result.identify_s:.1f} s); "
        f"line's own limit for the walk {result.wire_limit_s:.1f} s; ratio {walk / result.wire_limit_s:.2f}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", default="1-247")
    ap.add_argument("--bauds", default="9600,19200,38400")
    a = ap.parse_args()
    asyncio.run(main(parse_units(a.units), parse_bauds(a.bauds)))
