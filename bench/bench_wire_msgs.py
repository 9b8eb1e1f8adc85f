"""Cost of the agent's wire codec: pydantic (sync/wire.py) against msgspec (sync/wire_msgs.py).

    PYTHONPATH=. .venv/bin/python bench/bench_wire_msgs.py [--repeat 7] [--markdown] [--rss CHECKOUT ...]

Time: decoding an ack and a rejection (plain JSON, as inside their frame), a command (its zlib
frame, as ``open_command`` decodes it, decompression included), and building and encoding a status
and a command reply. Each figure is the best of ``--repeat`` timeit runs (the least disturbed by
other processes), in µs per message; both codecs run in the same process, one after the other.

Memory (``--rss``, one or more checkouts, e.g. this tree and the tree before): in a fresh
interpreter that has already imported what the agent needs besides its wire code (asyncio, sqlite3,
ssl, hashlib, ctypes, yaml, paho), the RSS that the agent's wire path adds: ``sync.signing`` and
``sync.commands_in`` imported, an ack and a command verified and decoded, a status and a reply
built and signed (``/proc/self/statm``, shared library pages in full).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import timeit
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sync import wire, wire_msgs

ACK = wire.Ack(
    site_id="site-a", batch_id="q3x9-1234", first_seq=1_000_001, last_seq=1_002_000, batch_sha256="a" * 64,
    stored=2000, duplicates=0, receiver="rx-1",
).model_dump_json().encode()  # fmt: skip
REJECTION = wire.Rejection(
    site_id="site-a", batch_id="q3x9-1235", batch_sha256="b" * 64, first_seq=1_002_001, last_seq=1_004_000,
    reason="unstorable", detail="value out of range", receiver="rx-1",
).model_dump_json().encode()  # fmt: skip
COMMAND = wire.unpack_frame(
    wire.pack_frame(
        wire.encode_command_payload(
            wire.Command(
                command_id="c-20261206-0001", target="site-a", kind="lighting", issued_at=1_796_000_000.0,
                expires_at=1_796_000_060.0, body={"override": "on", "dim": 80, "zones": ["north", "south"]},
            )
        ),
        b"\x00" * 64,
        msg_id="c-20261206-0001",
    )
)
BUFFER: dict[str, Any] = {"depth": 12_000, "bytes": 4_194_304, "oldest_ts": 1_796_000_000.25, "dropped": {}, "rejected": 0}
STATUS: dict[str, Any] = {
    "site_id": "site-a", "state": "online", "ts": 1_796_000_030.5, "connected_at": 1_796_000_000.0,
    "in_flight": 2, "agent_version": "0.9.0", "config_version": 3, "update_state": "idle", "healthy": True,
    "readings_per_s": 750.0,
}  # fmt: skip
REPLY: dict[str, Any] = {"site_id": "site-a", "command_id": "c-1", "outcome": "accepted", "reason": "dim 80", "ts": 1_796_000_001.0}


def cases() -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    """(what, the pydantic way, the msgspec way)."""
    buf_p, buf_m = wire.BufferStats(**BUFFER), wire_msgs.build(wire_msgs.BufferStats, **BUFFER)
    return [
        ("decode an ack", lambda: wire.decode_down(ACK), lambda: wire_msgs.decode_down(ACK)),
        ("decode a rejection", lambda: wire.decode_down(REJECTION), lambda: wire_msgs.decode_down(REJECTION)),
        ("decode a command (zlib frame)", lambda: wire.decode_command(COMMAND),
         lambda: wire_msgs.decode_command(COMMAND)),
        ("build + encode a status", lambda: wire.Status(**STATUS, buffer=buf_p).model_dump_json().encode(),
         lambda: wire_msgs.encode_small(wire_msgs.build(wire_msgs.Status, **STATUS, buffer=buf_m))),
        ("build + encode a command reply", lambda: wire.CommandReply(**REPLY).model_dump_json().encode(),
         lambda: wire_msgs.encode_small(wire_msgs.build(wire_msgs.CommandReply, **REPLY))),
    ]  # fmt: skip


_RSS_PROBE = r"""
import asyncio, ctypes, hashlib, json, os, sqlite3, ssl, sys, zlib
import yaml, paho.mqtt.client
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
base = rss()
from sync import ed25519
from sync.signing import Signer, open_command, open_down, sign_status
import sync.commands_in
try:
    from sync.wire_msgs import CommandReply, Status, build
    from sync.wire_base import CODEC_JSON, pack_frame
except ImportError:  # a tree before sync/wire_msgs.py
    from sync.wire import CODEC_JSON, CommandReply, Status, pack_frame
    def build(cls, **fields):
        return cls(**fields)
s = Signer(ed25519.private_from_pem(sys.stdin.buffer.read()))
ack, cmd = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
assert open_down(pack_frame(ack, s.sign(ack), CODEC_JSON, "q3x9-1234"), [s.public_key()]).stored == 2000
assert open_command(s.frame(cmd, "c-20261206-0001"), [s.public_key()], "site-a").kind == "lighting"
sign_status(build(Status, site_id="site-a", state="online", ts=1.0), s)
s.small_frame(build(CommandReply, site_id="site-a", command_id="c-1", outcome="accepted", ts=1.0), "c-1")
print(json.dumps({"base": base, "end": rss(), "pydantic": "pydantic" in sys.modules,
                  "msgspec": "msgspec" in sys.modules, "modules": len(sys.modules)}))
"""


def wire_path_rss(checkout: Path) -> dict[str, float]:
    """What the agent's wire path adds to an interpreter, run from ``checkout``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", _RSS_PROBE, ACK.hex(), zlib.compress(COMMAND.json_bytes()).hex()],
        input=pem, capture_output=True, check=True, cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)},
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def best_us(fn: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` runs, µs per call."""
    timer = timeit.Timer(fn)
    n, _ = timer.autorange()
    return min(timer.repeat(repeat, n)) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--rss", type=Path, nargs="+", metavar="CHECKOUT", help="measure the wire path's RSS instead")
    args = ap.parse_args()
    if args.rss:
        load = os.getloadavg()
        print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        for checkout in args.rss:
            r = wire_path_rss(checkout)
            print(f"{checkout}: {r['base']:.1f} MB before the wire path, {r['end']:.1f} MB after (+{r['end'] - r['base']:.1f} MB); "
                  f"pydantic {'imported' if r['pydantic'] else 'not imported'}, msgspec "
                  f"{'imported' if r['msgspec'] else 'not imported'}, {r['modules']:.0f} modules")
        return
    rows = [(what, best_us(p, args.repeat), best_us(m, args.repeat)) for what, p, m in cases()]
    load = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.markdown:
        print("| per message | pydantic (µs) | msgspec (µs) | msgspec / pydantic |\n|---|---:|---:|---:|")
        for what, p, m in rows:
            print(f"| {what} | {p:.2f} | {m:.2f} | {m / p:.2f} |")
    else:
        for what, p, m in rows:
            print(f"{what:<32} pydantic {p:8.2f} µs   msgspec {m:8.2f} µs   ratio {m / p:5.2f}")


if __name__ == "__main__":
    main()
