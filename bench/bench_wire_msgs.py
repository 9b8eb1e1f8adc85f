"""Cost per message of the agent's wire codec: pydantic (sync/wire.py) against msgspec (sync/wire_msgs.py).

    PYTHONPATH=. .venv/bin/python bench/bench_wire_msgs.py [--repeat 7] [--markdown]

Decoding an ack and a rejection (plain JSON, as inside their frame), a command (its zlib frame, as
``open_command`` decodes it, decompression included), and building and encoding a status and a
command reply. Each figure is the best of ``--repeat`` timeit runs (the least disturbed by other
processes), in µs per message; both codecs run in the same process, one after the other.
"""

from __future__ import annotations

import argparse
import os
import time
import timeit
from collections.abc import Callable

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
BUFFER = {"depth": 12_000, "bytes": 4_194_304, "oldest_ts": 1_796_000_000.25, "dropped": {}, "rejected": 0}
STATUS = {
    "site_id": "site-a", "state": "online", "ts": 1_796_000_030.5, "connected_at": 1_796_000_000.0,
    "in_flight": 2, "agent_version": "0.9.0", "config_version": 3, "update_state": "idle", "healthy": True,
    "readings_per_s": 750.0,
}  # fmt: skip
REPLY = {"site_id": "site-a", "command_id": "c-1", "outcome": "accepted", "reason": "dim 80", "ts": 1_796_000_001.0}


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


def best_us(fn: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` runs, µs per call."""
    timer = timeit.Timer(fn)
    n, _ = timer.autorange()
    return min(timer.repeat(repeat, n)) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
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
