"""The reading: what every driver, controller and model hands to the store."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

Value = Union[float, int, str, bool, None]


class Priority(enum.IntEnum):
    """Delivery class. Lower drains first; alarms are never dropped to make room."""

    ALARM = 0
    EVENT = 1
    TELEMETRY = 2


class Quality(enum.IntEnum):
    """How far a value can be trusted (OPC-style good / uncertain / bad)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class ClockQuality(enum.IntEnum):
    """Where the timestamp's wall clock came from when the reading was taken."""

    SYNCED = 0  # NTP, PTP or GPS disciplined
    RTC = 1  # battery-backed RTC, not yet disciplined since boot
    UNSYNCED = 2  # no RTC, no sync: wall time may be far off (monotonic order still holds)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point of one device at one moment.

    ``ts`` is UTC seconds since the epoch. ``meta`` carries small extras (model name and version,
    alarm text) and is sent as-is.
    """

    device: str
    point: str
    value: Value
    ts: float
    unit: str = ""
    quality: Quality = Quality.GOOD
    priority: Priority = Priority.TELEMETRY
    clock: ClockQuality = ClockQuality.SYNCED
    meta: dict[str, str] | None = field(default=None, compare=False)


AVAILABILITY_POINT = "availability"
"""Point name of a device's availability events: value ``online`` or ``offline``."""


def availability_event(device: str, online: bool, ts: float, clock: ClockQuality, where: str = "") -> Reading:
    """The event a source emits when a device stops answering (``offline``) or answers again (``online``)."""
    return Reading(
        device,
        AVAILABILITY_POINT,
        "online" if online else "offline",
        ts,
        priority=Priority.EVENT,
        clock=clock,
        meta={"where": where} if where else None,
    )


_FIELDS = ("device", "point", "value", "ts", "unit", "quality", "priority", "clock", "meta")
_SETTERS = tuple(Reading.__dict__[f].__set__ for f in _FIELDS)  # the slots' own descriptors


def telemetry_readings(
    device: str,
    points: Sequence[tuple[str, str]],
    values: Sequence[Value],
    ts: float,
    clock: ClockQuality,
    judged: Mapping[int, tuple[Quality, dict[str, str] | None]] | None = None,
) -> list[Reading]:
    """Telemetry readings of one device at one moment, built in bulk.

    ``points`` are (name, unit) pairs matching ``values``; ``judged`` gives the quality and meta of
    the indexes that are not GOOD. Equal to ``Reading(device, name, value, ts, unit, quality,
    clock=clock, meta=meta)`` for each, at about half the cost: the slots are filled through their
    descriptors instead of the frozen dataclass's ``__init__``.
    """
    s_dev, s_pt, s_val, s_ts, s_unit, s_q, s_pri, s_clk, s_meta = _SETTERS
    new = object.__new__
    good, tel = Quality.GOOD, Priority.TELEMETRY
    out = []
    for (name, unit), value in zip(points, values, strict=True):
        r = new(Reading)
        s_dev(r, device)
        s_pt(r, name)
        s_val(r, value)
        s_ts(r, ts)
        s_unit(r, unit)
        s_q(r, good)
        s_pri(r, tel)
        s_clk(r, clock)
        s_meta(r, None)
        out.append(r)
    if judged:
        for i, (quality, meta) in judged.items():
            s_q(out[i], quality)
            s_meta(out[i], meta)
    return out
