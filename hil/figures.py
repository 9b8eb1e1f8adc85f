"""The figures of a finished run, as plain data: what the HTML report draws and the JSON holds.

Everything comes from what the receiver stored (its rows, bucketed by reading timestamp), the fault
windows as they really happened, and the agent's store sampled once a second (the backlog).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hil.expect import GOOD, Check, Row, Verdict
from hil.schedule import FaultWindow

MAX_BUCKETS = 120
MIN_DRAINED = 20  # a backlog this small counts as drained (batches in flight)


@dataclass(frozen=True)
class RunData:
    """The inputs of the figures (a sub-set of a run's result, so tests can build one by hand)."""

    rig: Any  # hil.rig.Rig
    verdict: Verdict
    windows: Sequence[FaultWindow]
    rows: Sequence[Row]
    samples: Sequence[Any]  # hil.runner.Sample: wall, depth, last_seq
    start_wall: float
    end_wall: float
    elapsed_s: float
    drain_s: float | None = None


def check_rows(checks: Sequence[Check]) -> list[dict[str, Any]]:
    """The figures' row of each check: what it is, ``pass``, ``fail`` or ``not checked``, and why."""
    return [
        {
            "label": c.label,
            "name": c.name,
            "device": c.device,
            "status": "fail" if not c.ok else ("not checked" if c.skipped else "pass"),
            "worst": c.worst,
            "detail": c.detail,
        }
        for c in checks
    ]


def bucket_s(duration_s: float) -> float:
    """Bucket width: a whole number of seconds giving at most MAX_BUCKETS buckets."""
    return float(max(1, math.ceil(duration_s / MAX_BUCKETS)))


def touches(rig: Any, w: FaultWindow, device: str) -> bool:
    """True when fault window ``w`` takes ``device`` out or disturbs it (its own, its line's, site-wide)."""
    dev = rig.device(device)
    line = getattr(dev, "line", None)
    return w.target is None or w.target == device or (line is not None and w.target == line)


def _window(w: FaultWindow, start: float, end: float) -> dict[str, Any]:
    s = (w.start_wall if w.start_wall is not None else end) - start
    e = (w.end_wall if w.end_wall is not None else end) - start
    return {
        "label": w.label,
        "kind": w.kind,
        "target": w.target,
        "start_s": round(s, 3),
        "end_s": round(e, 3),
        "injected": w.start_wall is not None and not w.error,
        "error": w.error,
    }


def _outage_drains(data: RunData) -> list[dict[str, Any]]:
    """For each broker outage: the backlog it built and how long after it the store drained again."""
    out = []
    for w in data.windows:
        if w.kind != "broker_down" or w.start_wall is None:
            continue
        end = w.end_wall if w.end_wall is not None else data.end_wall
        before = [s.depth for s in data.samples if s.wall <= w.start_wall]
        limit = max(before[-1] if before else 0, MIN_DRAINED)
        after = [s for s in data.samples if s.wall >= end]
        drained = next((s.wall - end for s in after if s.depth <= limit), None)
        until = end + drained if drained is not None else data.end_wall
        during = [s.depth for s in data.samples if w.start_wall <= s.wall <= until]
        out.append(
            {
                "label": w.label,
                "peak_backlog": max(during) if during else None,
                "drained_after_s": round(drained, 1) if drained is not None else None,
            }
        )
    return out


def figures(data: RunData) -> dict[str, Any]:
    """The whole report as JSON-ready data."""
    start, end = data.start_wall, data.end_wall
    width = bucket_s(end - start)
    n = max(1, math.ceil((end - start) / width))
    by_dev: dict[str, list[Row]] = {}
    for r in data.rows:
        by_dev.setdefault(r.device, []).append(r)
    devices = []
    stats = {d.name: d for d in data.verdict.devices}
    for dev in data.rig.devices:
        rows = by_dev.get(dev.name, [])
        stored = [0] * n
        errors = [0] * n
        before = after = 0
        for r in rows:
            if r.ts < start:
                before += 1
                continue
            i = int((r.ts - start) // width)
            if i >= n:
                after += 1
                continue
            if r.quality == GOOD:
                stored[i] += 1
            else:
                errors[i] += 1
        st = stats.get(dev.name)
        devices.append(
            {
                "name": dev.name,
                "kind": st.kind if st else dev.kind,
                "rows": len(rows),
                "good": sum(1 for r in rows if r.quality == GOOD),
                "errors": sum(1 for r in rows if r.quality != GOOD),
                "points": dict(sorted(Counter(r.point for r in rows).items())),
                "stored": stored,
                "error_buckets": errors,
                "before_start": before,
                "after_end": after,
                "per_minute": st.per_minute if st else None,
                "worst_recovery_s": st.worst_recovery_s if st else None,
                "faults": [_window(w, start, end) for w in data.windows if touches(data.rig, w, dev.name)],
                "failed": list(st.failed) if st else [],
            }
        )
    return {
        "rig": data.rig.rig,
        "description": data.rig.description,
        "ok": data.verdict.ok,
        "elapsed_s": round(data.elapsed_s, 3),
        "start_wall": start,
        "end_wall": end,
        "bucket_s": width,
        "rows": len(data.rows),
        "last_seq": data.verdict.last_seq,
        "devices": devices,
        "faults": [_window(w, start, end) for w in data.windows],
        "backlog": [[round(s.wall - start, 2), s.depth] for s in data.samples],
        "outages": _outage_drains(data),
        "drain_s": round(data.drain_s, 2) if data.drain_s is not None else None,
        "checks": check_rows(data.verdict.checks),
    }
