"""How long `edge-agent run --config` takes to start, with the hand-over and without it.

    .venv/bin/python bench/bench_start.py [--devices 50] [--runs 5]

A site of N SDM120 meters on one Modbus TCP address nobody listens on (the start does not wait for
devices), no uplink. Each run starts `python -m agent run --config` and times it until the agent logs
``agent for site ... running`` (its sources started), then stops it. "hand-over" is the default start
(check the config with the pydantic models, exec the running agent on the runtime types);
"in process" is ``KBE_HANDOVER=0`` (the agent runs in the checking process, as before the hand-over).
Prints the median and the range of each, the time (UTC) and the load average.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from hil.procs import agent_argv, agent_env


def site(work: Path, n: int) -> Path:
    """A site of ``n`` meters behind a closed port, no uplink."""
    cfg = {
        "site": {"id": "bench-start", "name": "start", "location": {"lat": 21.19, "lon": 106.08}},
        "devices": [
            {
                "driver": "modbus",
                "name": f"meter-{u:02d}",
                "profile": "eastron-sdm120",
                "unit": u,
                "line": {"type": "tcp", "host": "127.0.0.1", "port": 9},
            }
            for u in range(1, n + 1)
        ],
        "store": {"path": str(work / "store.db")},
        "health": {"listen": None},
    }
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_time(cfg: Path, handover: bool) -> float:
    """Seconds from the start of the command to the agent's "running" line."""
    env = agent_env()
    env["KBE_HANDOVER"] = "1" if handover else "0"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        agent_argv("run", "--config", str(cfg)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if "agent for site" in line and "running" in line:
                return time.monotonic() - t0
        raise SystemExit(f"the agent stopped before it ran (exit {proc.wait()})")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    """Time both starts ``--runs`` times each, interleaved."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"hand-over": [], "in process": []}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = site(Path(tmp), args.devices)
        for _ in range(args.runs):
            times["hand-over"].append(start_time(cfg, True))
            times["in process"].append(start_time(cfg, False))
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; {args.devices} devices, {args.runs} runs each"
    )
    for name, values in times.items():
        print(
            f"{name:<12} median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"
        )


if __name__ == "__main__":
    main()
