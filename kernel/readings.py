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


class _Filling:
    """Reading's slot layout without the frozen guard: a reading is filled here, then becomes a
    :class:`Reading` by ``__class__`` assignment (the layouts match, so Python allows it)."""

    __slots__ = Reading.__slots__
    device: str
    point: str
    value: Value
    ts: float
    unit: str
    quality: Quality
    priority: Priority
    clock: ClockQuality
    meta: dict[str, str] | None


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
    clock=clock, meta=meta)`` for each, at about a third of the cost: the slots are filled without
    the frozen dataclass's ``__init__`` (one ``object.__setattr__`` call per field).
    """
    new = object.__new__
    good, tel = Quality.GOOD, Priority.TELEMETRY
    out: list[Reading] = []
    for (name, unit), value in zip(points, values, strict=True):
        r = new(_Filling)
        r.device = device
        r.point = name
        r.value = value
        r.ts = ts
        r.unit = unit
        r.quality = good
        r.priority = tel
        r.clock = clock
        r.meta = None
        r.__class__ = Reading  # type: ignore[assignment]
        out.append(r)  # type: ignore[arg-type]
    if judged:
        for i, (quality, meta) in judged.items():
            object.__setattr__(out[i], "quality", quality)
            object.__setattr__(out[i], "meta", meta)
    return out
