"""How fast the serial framers cut a noisy stream into frames, against decoding pre-cut frames.

Run: PYTHONPATH=. /work/venv/bin/python bench/bench_serial_framers.py
For each device: 5000 frames, one in ten preceded by 1-24 bytes of garbage and one in twenty with
a broken checksum, fed in 64-byte reads (what a serial port hands over). The baseline is decoding
the same frames already cut apart (no search, no buffering), measured in the same run; the ratio
is the cost of framing and resynchronising. A sensor sends at most ~3 kB/s at 9600 baud.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from typing import Any

from drivers.nmea import sentences as nm
from drivers.pms import frames as pf
from drivers.sds011 import frames as sf

N = 5000
CHUNK = 64


def make_frames(kind: str, rnd: random.Random) -> list[bytes]:
    out: list[bytes] = []
    t0 = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
    for i in range(N):
        if kind == "pms":
            out.append(
                pf.encode_measurement(pf.Measurement(tuple(rnd.randrange(1000) for _ in range(12)), 0))
            )
        elif kind == "sds011":
            out.append(
                sf.encode_measurement(sf.Measurement(rnd.randrange(9999), rnd.randrange(9999), 0xA160))
            )
        else:
            when = t0 + dt.timedelta(seconds=i)
            out.append(
                nm.encode_rmc(nm.Rmc("GN", when, True, 21.18 + rnd.random() / 1e4, 106.07, 0.0, None, "A"))
            )
    return out


def noisy_stream(frames: list[bytes], rnd: random.Random) -> tuple[bytes, int]:
    parts: list[bytes] = []
    broken = 0
    for f in frames:
        if rnd.random() < 0.1:
            parts.append(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 24))))
        if rnd.random() < 0.05:
            f = f[:-3] + bytes([f[-3] ^ 0x21]) + f[-2:]
            broken += 1
        parts.append(f)
    return b"".join(parts), broken


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    rnd = random.Random(4)
    framers: dict[str, tuple[Callable[[], Any], Callable[[bytes], Any]]] = {
        "pms": (pf.PmsFramer, pf.decode),
        "sds011": (sf.Sds011Framer, sf.decode),
        "nmea": (nm.NmeaFramer, nm.parse),
    }
    print(f"{'device':8} {'framed/s':>12} {'MB/s':>8} {'baseline/s':>12} {'ratio':>6}  found/intact")
    for kind, (make, decode) in framers.items():
        frames = make_frames(kind, rnd)
        stream, broken = noisy_stream(frames, rnd)

        def frame_all(stream: bytes = stream, make: Callable[[], Any] = make) -> int:
            fr = make()
            n = 0
            for i in range(0, len(stream), CHUNK):
                n += len(fr.feed(stream[i : i + CHUNK]))
            return n

        def decode_all(frames: list[bytes] = frames, decode: Callable[[bytes], Any] = decode) -> int:
            return sum(1 for f in frames if decode(f) is not None)

        t_frame, found = timed(frame_all)
        t_base, _ = timed(decode_all)
        rate, base = N / t_frame, N / t_base
        print(
            f"{kind:8} {rate:12,.0f} {len(stream) / t_frame / 1e6:8.2f} {base:12,.0f} {rate / base:6.2f}  {found}/{N - broken}"
        )


if __name__ == "__main__":
    main()
