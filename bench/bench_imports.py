"""What each import of `edge-agent run` costs in RSS and time, for a site of N Modbus devices.

    .venv/bin/python bench/bench_imports.py [--devices 50] [--top 25] [--markdown]

In a fresh interpreter: wraps ``builtins.__import__`` to read ``/proc/self/statm`` around every
first import, then does what the running agent does before its loop starts (import the CLI, build
the config of a site of N SDM120 meters with sync configured from the checked config the checking
process hands over, build the agent and its sources; with ``--in-process``, load and validate the
config with the pydantic models in the same process instead, as ``KBE_HANDOVER=0`` runs). Each
module gets its *own* cost (its import minus its children's), summed per top-level package. The
baseline in the same run is a bare interpreter (the first row). RSS includes shared libraries
mapped by an extension module (libcrypto, libssl, libsqlite3), as the kernel counts them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = r"""
import builtins, json, os, sys, time
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
base = rss()
own_rss, own_t, stack = {}, {}, []
real = builtins.__import__
def hook(name, globals=None, locals=None, fromlist=(), level=0):
    if level or name in sys.modules:
        return real(name, globals, locals, fromlist, level)
    r0, t0 = rss(), time.perf_counter()
    stack.append([0, 0.0])
    try:
        return real(name, globals, locals, fromlist, level)
    finally:
        child_r, child_t = stack.pop()
        dr, dt = rss() - r0, time.perf_counter() - t0
        own_rss[name] = own_rss.get(name, 0) + dr - child_r
        own_t[name] = own_t.get(name, 0.0) + dt - child_t
        if stack:
            stack[-1][0] += dr
            stack[-1][1] += dt
builtins.__import__ = hook
sys.path.insert(0, sys.argv[2])
import agent.cli  # noqa: what `edge-agent run --config` imports (click only for other commands)
from agent.app import Agent
if sys.argv[3] == "-":  # the agent in the checking process (KBE_HANDOVER=0, or a site without runtime types)
    from agent.config import load_config
    cfg = load_config(sys.argv[1])
else:  # the running agent after the hand-over: what agent.runtime.run_handed_over builds
    from agent import runconfig
    with open(sys.argv[3]) as f:
        doc = json.load(f)
    cfg = runconfig.site_config(doc["config"])
    if doc["profiles"]:
        from drivers.modbus.kind import remember_profiles
        remember_profiles({p: runconfig.profile(d) for p, d in doc["profiles"].items()})
agent = Agent(cfg)
sources = agent.build_sources()
if cfg.sync is not None:
    import sync.uploader  # noqa: imported by Agent.start
builtins.__import__ = real
import gc; gc.collect()
print(json.dumps({"base": base, "end": rss(), "own_rss": own_rss, "own_t": own_t,
                  "numpy": "numpy" in sys.modules, "cv2": "cv2" in sys.modules,
                  "pydantic": "pydantic" in sys.modules, "modules": len(sys.modules)}))
"""


def site_yaml(work: Path, n: int) -> Path:
    """A site of ``n`` SDM120 meters on one Modbus TCP gateway, syncing over MQTT."""
    import yaml

    from sync.signing import generate_keypair

    key, _pub = generate_keypair(work / "keys", "site")
    _ckey, cpub = generate_keypair(work / "keys", "centre")
    cfg = {
        "site": {"id": "bench-imports", "name": "imports", "location": {"lat": 21.19, "lon": 106.08}},
        "devices": [
            {
                "driver": "modbus",
                "name": f"meter-{u:02d}",
                "profile": "eastron-sdm120",
                "unit": u,
                "line": {"type": "tcp", "host": "127.0.0.1", "port": 5020},
                "poll": {"fast_s": 1.0, "slow_s": 10.0},
            }
            for u in range(1, n + 1)
        ],
        "sync": {
            "broker": "mqtt://127.0.0.1:1883",
            "allow_plaintext": True,
            "centre_public_keys": [str(cpub)],
            "signing_key_file": str(key),
        },
        "store": {"path": str(work / "store.db")},
        "health": {"listen": None},
    }
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def handover_file(cfg: Path) -> Path:
    """The hand-over document of ``cfg``, as ``edge-agent run`` writes it before the exec, in a file beside it."""
    from agent.config import load_config
    from agent.handover import document

    doc = document(load_config(cfg), str(cfg))
    assert doc is not None, "a Modbus site is handed over"
    path = cfg.with_suffix(".handover.json")
    path.write_text(json.dumps(doc))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--in-process", action="store_true", help="validate in the agent's process (KBE_HANDOVER=0)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = site_yaml(Path(tmp), args.devices)
        handed = "-" if args.in_process else str(handover_file(cfg))
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, str(cfg), str(ROOT), handed], capture_output=True, text=True, check=False
        )
    if out.returncode:
        sys.exit(out.stderr)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    by_pkg: dict[str, list[float]] = {}
    for name, r in data["own_rss"].items():
        top = name.split(".")[0]
        acc = by_pkg.setdefault(top, [0.0, 0.0])
        acc[0] += r / 2**20
        acc[1] += data["own_t"][name] * 1000
    rows = sorted(by_pkg.items(), key=lambda kv: -kv[1][0])
    mb = 2**20
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.devices} devices; "
          f"{data['modules']} modules; numpy imported: {data['numpy']}; cv2 imported: {data['cv2']}; "
          f"pydantic imported: {data['pydantic']}; {'in process' if args.in_process else 'after the hand-over'}")
    if args.markdown:
        print("| package | RSS (MB) | import time (ms) |\n|---|---:|---:|")
        print(f"| bare interpreter (baseline) | {data['base'] / mb:.1f} | |")
        for pkg, (r, t) in rows[: args.top]:
            print(f"| {pkg} | {r:.1f} | {t:.0f} |")
        print(f"| **total after start-up** | **{data['end'] / mb:.1f}** | |")
    else:
        print(f"{'bare interpreter':<28} {data['base'] / mb:6.1f} MB")
        for pkg, (r, t) in rows[: args.top]:
            print(f"{pkg:<28} {r:6.1f} MB {t:7.0f} ms")
        print(f"{'total after start-up':<28} {data['end'] / mb:6.1f} MB")


if __name__ == "__main__":
    main()
