"""HIL bench: 30 emulated Modbus devices on 3 RTU lines and 1 TCP gateway, for 10 minutes.

Prints the readings stored per second against the rate the devices offer (the baseline, measured
from the same rig's profiles and poll periods), readings lost and stored twice, and the agent's CPU
share and peak RSS read from /proc. ``--minutes`` shortens a trial run; ``--json`` writes the figures.

    PYTHONPATH=. /work/venv/bin/python bench/bench_hil.py --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hil.rig import parse_rig
from hil.runner import RigRun, RunOptions
from kernel.progress import Progress

# Eight devices per RTU line and six behind the gateway, mixing the shipped profiles.
RTU_MIX = ["eastron-sdm120", "xy-md02", "soil-7in1", "supmea-do7013", "ysi-odo-ct"]
TCP_MIX = ["eastron-sdm630", "eastron-sdm120", "xy-md02"]


def bench_rig(minutes: float, poll_s: float, postgres: bool, faults: bool = False) -> dict[str, Any]:
    """The bench rig as data: 3 RTU lines at 38400 baud with 8 devices each, 6 behind a TCP gateway."""
    lines: list[dict[str, Any]] = [
        {"name": f"rs485-{i}", "type": "rtu", "baudrate": 38400} for i in (1, 2, 3)
    ]
    lines.append({"name": "gateway", "type": "tcp"})
    devices: list[dict[str, Any]] = []
    for li in (1, 2, 3):
        for u in range(1, 9):
            devices.append(
                {
                    "kind": "modbus",
                    "name": f"l{li}-u{u}",
                    "profile": RTU_MIX[(u - 1) % len(RTU_MIX)],
                    "line": f"rs485-{li}",
                    "unit": u,
                    "poll_s": poll_s,
                }
            )
    for u in range(1, 7):
        devices.append(
            {
                "kind": "modbus",
                "name": f"gw-u{u}",
                "profile": TCP_MIX[(u - 1) % len(TCP_MIX)],
                "line": "gateway",
                "unit": u,
                "poll_s": poll_s,
            }
        )
    duration = minutes * 60.0
    storm: list[dict[str, Any]] = []
    if faults:
        # Site-wide faults only, so every device keeps its offered rate outside the outages.
        storm = [
            {"kind": "broker_down", "at_s": 0.2 * duration, "for_s": min(60.0, 0.15 * duration)},
            {"kind": "agent_kill", "at_s": 0.5 * duration, "down_s": 2.0},
            {"kind": "receiver_restart", "at_s": 0.7 * duration, "down_s": 2.0, "signal": "SIGKILL"},
        ]
    return {
        "rig": "bench-30",
        "faults": storm,
        "description": "30 devices, 3 RTU lines + 1 TCP gateway",
        "duration_s": duration,
        "lines": lines,
        "devices": devices,
        "expect": {"recovery_s": 30, "drain_timeout_s": 120},
        "receiver": {"db": "postgres" if postgres else "sqlite"},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=1.0, help="Poll period of every device (s).")
    parser.add_argument("--postgres", action="store_true", help="Receiver on PostgreSQL instead of SQLite.")
    parser.add_argument("--faults", action="store_true", help="Broker outage, agent SIGKILL, receiver kill.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()

    rig = parse_rig(bench_rig(args.minutes, args.poll, args.postgres, args.faults), "bench")
    t0 = time.monotonic()
    progress = Progress(f"bench hil {len(rig.devices)} devices")
    result = asyncio.run(RigRun(rig, RunOptions(on_progress=progress.update)).run())
    progress.close()
    wall = time.monotonic() - t0
    figures = {
        "devices": len(rig.devices),
        "minutes": args.minutes,
        "poll_s": args.poll,
        "receiver": rig.receiver.db,
        "faults": [w.label for w in result.windows],
        "offered_per_s": round(result.offered_per_s, 1),
        "stored_per_s": round(result.stored_per_s, 1),
        "stored_over_offered": round(result.stored_per_s / result.offered_per_s, 3)
        if result.offered_per_s
        else None,
        "lost": result.lost,
        "duplicates": result.duplicates,
        "store_last_seq": result.verdict.last_seq,
        "agent_cpu_pct": round(result.agent_cpu_pct, 1) if result.agent_cpu_pct is not None else None,
        "agent_rss_max_mib": round(result.agent_rss_max_kib / 1024, 1) if result.agent_rss_max_kib else None,
        "drain_s": round(result.extra.get("drain_s", 0.0), 1),
        "wall_s": round(wall, 1),
        "cpus": os.cpu_count(),
        "expectations": "passed"
        if result.verdict.ok
        else "FAILED: " + ", ".join(c.label for c in result.verdict.failures),
    }
    print(result.report)
    print()
    print(f"devices                 {figures['devices']} (3 RTU lines at 38400 baud x 8, TCP gateway x 6)")
    print(f"offered (baseline)      {figures['offered_per_s']} readings/s")
    print(
        f"stored                  {figures['stored_per_s']} readings/s  ({figures['stored_over_offered']} x offered)"
    )
    print(f"lost / duplicates       {figures['lost']} / {figures['duplicates']}")
    print(f"agent CPU               {figures['agent_cpu_pct']} % of one core")
    print(f"agent RSS (peak)        {figures['agent_rss_max_mib']} MiB")
    print(f"drain after the run     {figures['drain_s']} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if result.verdict.ok and figures["lost"] == 0 and figures["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
