"""Checks a finished run against the rig's expectations, from what the receiver stored.

Inputs are plain data (the receiver's rows, the store's last seq, the fault windows as they really
happened), so every check can be tested without starting a process.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hil.rig import Follow, GpioDevice, GpioInputSet, ModbusDevice, Rig, SystemDevice, WindowFault
from hil.schedule import FaultWindow

GOOD = 0  # kernel.readings.Quality.GOOD
TELEMETRY = 2  # kernel.readings.Priority.TELEMETRY
OUTAGE_KINDS = {"dead", "reboot", "agent_kill", "tcp_drop"}
MAX_LISTED = 10


@dataclass(frozen=True)
class Row:
    """One reading as the receiver stored it."""

    seq: int
    device: str
    point: str
    value: Any
    ts: float
    quality: int = GOOD
    priority: int = TELEMETRY
    received: float | None = None  # when the receiver stored it (wall clock), if known

    @property
    def measured(self) -> bool:
        """A good telemetry value (not an event such as ``online`` or an alarm)."""
        return self.quality == GOOD and self.priority == TELEMETRY


@dataclass
class Check:
    """The outcome of one expectation (for one device, or for the whole run when ``device`` is None)."""

    name: str
    ok: bool
    detail: str
    device: str | None = None
    skipped: bool = False
    worst: float | None = None  # the worst value seen (seconds, a rate, a count), for the report

    @property
    def label(self) -> str:
        """``recovery[th1]`` or ``no_loss``"""
        return f"{self.name}[{self.device}]" if self.device else self.name


@dataclass
class DeviceStats:
    """Per-device figures for the report table."""

    name: str
    kind: str
    readings: int = 0
    per_minute: float | None = None
    out_of_range: int = 0
    faults: int = 0
    worst_recovery_s: float | None = None
    failed: list[str] = field(default_factory=list)


@dataclass
class RunRecord:
    """Everything the checker needs about a finished run."""

    rig: Rig
    start_wall: float
    end_wall: float
    last_seq: int
    rows: Sequence[Row]
    windows: Sequence[FaultWindow]
    ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)  # seq -> reason, from the store's rejected table


@dataclass
class Verdict:
    """All checks and the per-device table of one run."""

    checks: list[Check]
    devices: list[DeviceStats]
    rows: int
    last_seq: int

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]


def _spans(seqs: Iterable[int]) -> str:
    """``3, 7-9, 12`` (at most MAX_LISTED spans, then ``...``)."""
    out: list[str] = []
    items = sorted(seqs)
    i = 0
    while i < len(items) and len(out) < MAX_LISTED:
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ", ".join(out) + (", ..." if i < len(items) else "")


def check_loss(rec: RunRecord) -> Check:
    """Every seq 1..last_seq is in the receiver, and nothing else."""
    got = {r.seq for r in rec.rows}
    expected = set(range(1, rec.last_seq + 1))
    missing = expected - got
    extra = got - expected
    if not missing and not extra:
        return Check("no_loss", True, f"all {rec.last_seq} seqs accepted by the store reached the receiver")
    parts = []
    refused = {s: rec.rejected[s] for s in missing if s in rec.rejected}
    if refused:
        reasons = ", ".join(sorted(set(refused.values())))
        parts.append(f"{len(refused)} seqs were refused by the receiver ({reasons}): {_spans(refused)}")
        missing -= set(refused)
    if missing:
        parts.append(f"{len(missing)} of {rec.last_seq} seqs never reached the receiver: {_spans(missing)}")
    if extra:
        parts.append(
            f"{len(extra)} seqs in the receiver beyond the store's last seq {rec.last_seq}: {_spans(extra)}"
        )
    return Check("no_loss", False, "; ".join(parts))


def check_duplicates(rec: RunRecord) -> Check:
    """No seq twice, and no reading (device, point, timestamp, value) stored under two seqs."""
    seen_seq: dict[int, int] = defaultdict(int)
    by_key: dict[tuple[str, str, float, str], list[int]] = defaultdict(list)
    for r in rec.rows:
        seen_seq[r.seq] += 1
        by_key[(r.device, r.point, r.ts, repr(r.value))].append(r.seq)
    twice = [s for s, n in seen_seq.items() if n > 1]
    dup_keys = {k: v for k, v in by_key.items() if len(v) > 1}
    if not twice and not dup_keys:
        return Check("no_duplicates", True, f"{len(rec.rows)} rows, each reading once")
    parts = []
    if twice:
        parts.append(f"{len(twice)} seqs stored more than once: {_spans(twice)}")
    if dup_keys:
        (dev, point, ts, _), seqs = next(iter(dup_keys.items()))
        parts.append(
            f"{len(dup_keys)} readings stored under several seqs (first: {dev}.{point} at {ts:.3f} as seqs {seqs})"
        )
    return Check("no_duplicates", False, "; ".join(parts))


def _device_windows(rec: RunRecord, device: str) -> list[FaultWindow]:
    """Fault windows that take ``device`` out (its own faults, its line's drops, agent kills)."""
    dev = rec.rig.device(device)
    line = dev.line if isinstance(dev, ModbusDevice) else None
    out = []
    for w in rec.windows:
        if w.start_wall is None:
            continue
        if w.target == device or (line is not None and w.target == line) or w.kind == "agent_kill":
            out.append(w)
    return out


def _is_outage(rec: RunRecord, w: FaultWindow) -> bool:
    if w.kind in OUTAGE_KINDS:
        return True
    fault = rec.rig.faults[w.index]
    return isinstance(fault, WindowFault) and getattr(fault, "rate", 0.0) >= 1.0


def _never_ends(rec: RunRecord, w: FaultWindow) -> bool:
    """A fault that lasts until the end of the run: there is no "after" to recover in."""
    return w.planned_end_s > w.planned_start_s and w.planned_end_s >= rec.rig.duration_s - 1e-6


def check_recovery(rec: RunRecord, device: str, good_ts: Sequence[float], stats: DeviceStats) -> Check:
    """After each fault that touches the device ends, a good reading follows within recovery_s.

    A fault that never ends, or ends less than recovery_s before the run does, is "not checked":
    when no fault was left to check, the check is skipped rather than reported as passed.
    """
    allowance = rec.rig.expect.recovery_s
    assert allowance is not None
    windows = _device_windows(rec, device)
    stats.faults = len(windows)
    if not windows:
        return Check("recovery", True, "no fault touched this device", device, skipped=True)
    problems, times, unchecked = [], [], []
    late: list[float] = []
    for w in windows:
        end = w.end_wall if w.end_wall is not None else rec.end_wall
        if w.error:
            problems.append(f"{w.label}: the fault could not be injected ({w.error})")
            continue
        if _never_ends(rec, w):
            unchecked.append(f"{w.label} lasts to the end of the run")
            continue
        if end + allowance > rec.end_wall:
            # Too close to the end of the run to demand recovery; a reading after it still counts.
            later = [t for t in good_ts if t >= end]
            if later:
                times.append(later[0] - end)
            else:
                unchecked.append(f"{w.label} ends under {allowance:g} s before the run does")
            continue
        after = [t for t in good_ts if t >= end]
        if not after or after[0] - end > allowance:
            seen = f"next good reading {after[0] - end:.1f} s after" if after else "no good reading after it"
            problems.append(f"{w.label}: not back within {allowance:g} s ({seen})")
            late.append(after[0] - end if after else rec.end_wall - end)
            continue
        times.append(after[0] - end)
    worst = max(times + late) if times or late else None  # a failed recovery is the worst seen
    stats.worst_recovery_s = worst
    note = f"; not checked: {'; '.join(unchecked)}" if unchecked else ""
    if problems:
        return Check("recovery", False, "; ".join(problems) + note, device, worst=worst)
    if worst is None or not times:
        return Check("recovery", True, "not checked: " + "; ".join(unchecked), device, skipped=True)
    checked = len(times)
    return Check(
        "recovery", True, f"back after each of {checked} faults (worst {worst:.1f} s){note}", device, worst=worst
    )


def check_backlog(rec: RunRecord) -> Check:
    """After each broker outage ends, what was stored during it reaches the receiver within N s.

    Measured on the receiver's own clock (``received_at``) against the wall time the broker came
    back; an outage ending less than N s before the run does is "not checked" (the drain follows).
    """
    limit = rec.rig.expect.backlog_delivered_s
    assert limit is not None
    outages = [w for w in rec.windows if w.kind == "broker_down" and w.start_wall is not None]
    if not outages:
        return Check("backlog_delivered", True, "no broker outage in this run", skipped=True)
    problems, worst_all, unchecked = [], [], []
    for w in outages:
        end = w.end_wall if w.end_wall is not None else rec.end_wall
        if _never_ends(rec, w) or end + limit > rec.end_wall:
            unchecked.append(w.label)
            continue
        assert w.start_wall is not None
        held = [r for r in rec.rows if w.start_wall <= r.ts <= end]
        if not held:
            problems.append(f"{w.label}: nothing stored during the outage reached the receiver")
            continue
        unknown = [r for r in held if r.received is None]
        if unknown:
            problems.append(f"{w.label}: {len(unknown)} rows carry no receive time")
            continue
        last = max(r.received for r in held if r.received is not None)
        delay = max(0.0, last - end)
        worst_all.append(delay)
        if delay > limit:
            problems.append(
                f"{w.label}: {len(held)} readings held during it; the last reached the receiver "
                f"{delay:.1f} s after the broker came back (limit {limit:g} s)"
            )
    worst = max(worst_all) if worst_all else None
    note = f"; not checked: {', '.join(unchecked)} (ends too close to the end of the run)" if unchecked else ""
    if problems:
        return Check("backlog_delivered", False, "; ".join(problems) + note, worst=worst)
    if worst is None:
        return Check("backlog_delivered", True, "not checked" + note.removeprefix("; not checked"), skipped=True)
    return Check(
        "backlog_delivered",
        True,
        f"backlog of {len(worst_all)} outages delivered within {worst:.1f} s (limit {limit:g} s){note}",
        worst=worst,
    )


def check_ranges(rec: RunRecord, device: str, rows: Sequence[Row], stats: DeviceStats) -> Check:
    """Every numeric value lies inside its point's range, whatever quality the driver gave it."""
    ranges = rec.ranges.get(device, {})
    if not ranges:
        return Check("values_in_range", True, "no ranges known for this device", device, skipped=True)
    bad: list[str] = []
    checked = 0
    for r in rows:
        lim = ranges.get(r.point)
        if lim is None or isinstance(r.value, bool) or not isinstance(r.value, int | float):
            continue
        checked += 1
        if not (lim[0] <= r.value <= lim[1]) or math.isnan(r.value):
            stats.out_of_range += 1
            if len(bad) < 3:
                bad.append(f"{r.point}={r.value!r} (seq {r.seq}) outside [{lim[0]:g}, {lim[1]:g}]")
    if stats.out_of_range:
        return Check(
            "values_in_range",
            False,
            f"{stats.out_of_range} of {checked} values out of range: {'; '.join(bad)}",
            device,
            worst=float(stats.out_of_range),
        )
    return Check("values_in_range", True, f"{checked} values within range", device)


def _overlap(a0: float, a1: float, spans: list[tuple[float, float]]) -> float:
    """Length of [a0, a1] covered by the union of ``spans``."""
    total, cur_end = 0.0, a0
    for s0, s1 in sorted(spans):
        s0, s1 = max(s0, cur_end), min(s1, a1)
        if s1 > s0:
            total += s1 - s0
            cur_end = s1
    return total


def check_rate(rec: RunRecord, device: str, rows: Sequence[Row], stats: DeviceStats) -> Check:
    """Readings per minute over the device's fault-free time, at least the rig's minimum."""
    dev = rec.rig.device(device)
    minimum = dev.min_per_minute if dev.min_per_minute is not None else rec.rig.expect.min_per_minute
    allowance = rec.rig.expect.recovery_s or 0.0
    spans = [
        (w.start_wall or rec.start_wall, (w.end_wall or rec.end_wall) + allowance)
        for w in _device_windows(rec, device)
        if _is_outage(rec, w)
    ]
    healthy = (rec.end_wall - rec.start_wall) - _overlap(rec.start_wall, rec.end_wall, spans)
    counted = [
        r
        for r in rows
        if rec.start_wall <= r.ts <= rec.end_wall
        and r.measured
        and not any(s0 <= r.ts <= s1 for s0, s1 in spans)
    ]
    stats.per_minute = 60.0 * len(counted) / healthy if healthy > 0 else None
    if minimum is None:
        return Check("min_per_minute", True, "no minimum set", device, skipped=True)
    # A window shorter than a few report periods says nothing about a rate.
    needed = max(5.0, 3.0 * _period(dev))
    if healthy < needed:
        return Check(
            "min_per_minute",
            True,
            f"only {healthy:.1f} s without faults (under {needed:g} s): not measured",
            device,
            skipped=True,
        )
    assert stats.per_minute is not None
    ok = stats.per_minute >= minimum
    detail = f"{stats.per_minute:.1f}/min over {healthy:.0f} s without faults (minimum {minimum:g})"
    return Check("min_per_minute", ok, detail, device, worst=stats.per_minute)


def _same(stored: Any, wanted: bool | float | str) -> bool:
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if isinstance(wanted, int | float) and isinstance(stored, int | float):
        return abs(float(stored) - float(wanted)) < 1e-6
    return str(stored) == str(wanted)


def check_follows(rec: RunRecord) -> list[Check]:
    """For each input the rig drove, the readings that must follow each change within ``within_s``.

    Going active, the ``follow`` readings (by default the input's own event, ``True``); going back
    inactive, the input's own event ``False``.
    """
    checks = []
    for w in rec.windows:
        fault = rec.rig.faults[w.index]
        if not isinstance(fault, GpioInputSet) or w.start_wall is None:
            continue
        own = Follow(device=fault.device, point=fault.input, value=True)
        phases = [(w.start_wall, fault.follow or [own], "active")]
        if w.end_wall is not None and not _never_ends(rec, w):
            phases.append((w.end_wall, [own.model_copy(update={"value": False})], "inactive"))
        for at, wanted, phase in phases:
            when = w.planned_start_s if phase == "active" else w.planned_end_s
            label = f"{fault.input}={phase}@{round(when, 1):g}s"
            if at + fault.within_s > rec.end_wall:
                checks.append(
                    Check("follows", True, f"not checked: under {fault.within_s:g} s before the end", label, True)
                )
                continue
            missing, worst = [], 0.0
            for f in wanted:
                hits = [
                    r.ts - at
                    for r in rec.rows
                    if r.device == f.device
                    and r.point == f.point
                    and at - 0.5 <= r.ts <= at + fault.within_s
                    and _same(r.value, f.value)
                ]
                if hits:
                    worst = max(worst, max(0.0, min(hits)))
                else:
                    seen = sorted(
                        (r for r in rec.rows if r.device == f.device and r.point == f.point and r.ts >= at - 0.5),
                        key=lambda r: r.ts,
                    )
                    after = f"; next was {seen[0].value!r} {seen[0].ts - at:.1f} s after" if seen else ""
                    missing.append(f"{f.device}.{f.point}={f.value!r} not within {fault.within_s:g} s{after}")
            if missing:
                checks.append(Check("follows", False, "; ".join(missing), label, worst=worst))
            else:
                names = ", ".join(f"{f.device}.{f.point}={f.value!r}" for f in wanted)
                checks.append(Check("follows", True, f"{names} within {worst:.1f} s", label, worst=worst))
    return checks


def evaluate(rec: RunRecord) -> Verdict:
    """Run every expectation the rig asks for."""
    exp = rec.rig.expect
    checks: list[Check] = []
    if exp.no_loss:
        checks.append(check_loss(rec))
    if exp.no_duplicates:
        checks.append(check_duplicates(rec))
    if exp.backlog_delivered_s is not None:
        checks.append(check_backlog(rec))
    by_device: dict[str, list[Row]] = defaultdict(list)
    for r in rec.rows:
        by_device[r.device].append(r)
    stats_list: list[DeviceStats] = []
    for dev in rec.rig.devices:
        rows = sorted(by_device.get(dev.name, []), key=lambda r: r.ts)
        stats = DeviceStats(dev.name, _kind_label(dev), readings=len(rows))
        good_ts = [r.ts for r in rows if r.measured]
        dev_checks: list[Check] = []
        if not rows:
            dev_checks.append(
                Check("reported", False, "the receiver holds no reading from this device", dev.name)
            )
        if exp.recovery_s is not None:
            dev_checks.append(check_recovery(rec, dev.name, good_ts, stats))
        if exp.values_in_range:
            dev_checks.append(check_ranges(rec, dev.name, rows, stats))
        dev_checks.append(check_rate(rec, dev.name, rows, stats))
        stats.failed = [c.name for c in dev_checks if not c.ok]
        checks.extend(dev_checks)
        stats_list.append(stats)
    checks.extend(check_follows(rec))
    for w in rec.windows:
        if w.error and w.target is None:
            checks.append(Check(f"inject[{w.kind}]", False, f"{w.label}: {w.error}"))
    return Verdict(checks, stats_list, len(rec.rows), rec.last_seq)


def _period(dev: Any) -> float:
    """How often the device reports, in seconds."""
    return float(dev.poll_s if isinstance(dev, ModbusDevice) else dev.period_s)


def _kind_label(dev: Any) -> str:
    if isinstance(dev, ModbusDevice):
        return f"modbus {dev.profile}"
    if isinstance(dev, GpioDevice):
        return "gpio"
    if isinstance(dev, SystemDevice):
        return "system"
    return f"serial {dev.sensor}"


def failing_so_far(
    rig: Rig, windows: Sequence[FaultWindow], last_good: dict[str, float], start_wall: float, now: float
) -> list[str]:
    """Expectations already failing while the run goes on (for the progress line).

    ``last_good`` is each device's newest good telemetry timestamp at the receiver. A device is
    failing ``recovery`` when a fault touching it ended more than ``recovery_s`` ago and nothing good
    came after, and ``reported`` when it has said nothing good within the first ``recovery_s``
    plus three of its periods. Cheap on purpose: the full checks run at the end.
    """
    allowance = rig.expect.recovery_s if rig.expect.recovery_s is not None else 30.0
    out: list[str] = []
    for dev in rig.devices:
        last = last_good.get(dev.name)
        line = dev.line if isinstance(dev, ModbusDevice) else None
        overdue = [
            w
            for w in windows
            if w.end_wall is not None
            and w.start_wall is not None
            and not w.error
            and (w.target in (dev.name, line) or w.kind == "agent_kill")
            and now - w.end_wall > allowance
            and (last is None or last < w.end_wall)
        ]
        if overdue:
            out.append(f"recovery[{dev.name}]")
        elif last is None and now - start_wall > allowance + 3 * _period(dev):
            out.append(f"reported[{dev.name}]")
    out.extend(f"inject[{w.kind}]" for w in windows if w.error)
    return out
