"""Which payload codec for a batch: size and encode+decode time of JSON under zlib, lzma and bz2.

Run: PYTHONPATH=. /work/venv/bin/python bench/bench_wire.py
The baseline is the uncompressed JSON document of the same batch.
"""

from __future__ import annotations

import bz2
import lzma
import random
import time
import zlib
from collections.abc import Callable

from kernel.readings import Priority
from sync.wire import Batch, BufferStats, WireReading


def sample_batch(n: int = 2000) -> Batch:
    """A realistic batch: 20 devices x 5 points of float telemetry, one reading per second."""
    rnd = random.Random(1)
    t0 = 1_790_000_000.0
    readings = []
    for i in range(n):
        dev, pt = divmod(i % 100, 5)
        readings.append(
            WireReading(
                seq=100_000 + i,
                device=f"meter-{dev:02d}",
                point=("voltage_l1", "current_l1", "power_kw", "energy_kwh", "pf")[pt],
                ts=round(t0 + i // 100 + rnd.random() * 0.01, 3),
                value=round(rnd.gauss(230, 3), 2),
                unit=("V", "A", "kW", "kWh", "")[pt],
                priority=Priority.TELEMETRY,
            )
        )
    return Batch(
        site_id="bn-kcn-que-vo-01",
        batch_id="b-0001",
        first_seq=100_000,
        last_seq=100_000 + n - 1,
        created_at=t0,
        readings=readings,
        buffer=BufferStats(depth=n, bytes=4096),
    )


def measure(name: str, enc: Callable[[bytes], bytes], dec: Callable[[bytes], bytes], doc: bytes) -> None:
    """Print size, ratio to raw JSON and the time per batch."""
    reps = 20
    t = time.perf_counter()
    for _ in range(reps):
        out = enc(doc)
        assert dec(out) == doc
    dt = (time.perf_counter() - t) / reps
    ratio = len(out) / len(doc)
    print(f"{name:14s} {len(out):8d} B  {ratio:6.3f} x raw  {dt * 1000:7.2f} ms/batch (enc+dec)")


def main() -> None:
    """Compare codecs on one 2000-reading batch."""
    doc = sample_batch().model_dump_json().encode()
    print(f"batch of 2000 readings, raw JSON {len(doc)} B ({len(doc) / 2000:.1f} B/reading)")
    measure("json (raw)", lambda b: b, lambda b: b, doc)
    for level in (1, 6, 9):
        measure(f"zlib-{level}", lambda b, lv=level: zlib.compress(b, lv), zlib.decompress, doc)
    measure("bz2-9", bz2.compress, bz2.decompress, doc)
    measure("lzma-0", lambda b: lzma.compress(b, preset=0), lzma.decompress, doc)
    measure("lzma-6", lzma.compress, lzma.decompress, doc)


if __name__ == "__main__":
    main()
