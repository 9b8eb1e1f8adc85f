"""One Modbus device on a bus: its points (profile plus site overrides), read plan, decoding, breaker."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from drivers.modbus.blockcodec import BlockDecoder
from drivers.modbus.codec import INTEGER_TYPES, Decoder, encode_raw, make_decoder, unscale
from drivers.modbus.plan import Block, Planner
from drivers.modbus.points import BIT_TABLES
from kernel.errors import WriteRefused
from kernel.readings import ClockQuality, Quality, Reading, telemetry_readings

if TYPE_CHECKING:
    from drivers.modbus.profile import Point, Profile


@dataclass
class DeviceSettings:
    """Per-device acquisition settings (from the site config or the technician's command line)."""

    name: str
    unit: int
    timeout_s: float = 0.5
    retries: int = 1
    fast_s: float = 1.0
    slow_s: float = 60.0
    breaker_after: int = 3
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    max_gap: int | None = None
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)


class ModbusDevice:
    """A device's state on its bus: plan, schedule and circuit breaker.

    The breaker opens after ``breaker_after`` failed polls in a row; while open, the device is only
    probed once per backoff period (doubling up to ``backoff_max_s``), so it costs the bus one
    timeout per period instead of one per poll.
    """

    def __init__(self, profile: Profile, settings: DeviceSettings) -> None:
        self.profile = profile
        self.s = settings
        self.name = settings.name
        self.unit = settings.unit
        self.points = apply_overrides(profile, settings.overrides)
        self._by_name = {p.name: p for p in self.points}
        self._decoders: dict[str, Decoder] = {}
        self._blocks: dict[int, _Prepared] = {}
        gap = profile.max_gap if settings.max_gap is None else settings.max_gap
        self.planner = Planner(self.points, profile.max_registers, profile.max_bits, gap)
        self.period = {"fast": settings.fast_s, "slow": settings.slow_s}
        now = time.monotonic()
        self.due = {cls: now for cls in ("fast", "slow") if self.planner.plan(cls)}
        self.online: bool | None = None
        self.failures = 0
        self.open_until = 0.0
        self.backoff = settings.backoff_min_s
        self.skipped = 0  # polls merged into a late one, or moved later by the pace, instead of queued
        self._stretched = 0.0  # polls the pace's stretch has moved later, not yet counted whole

    def point(self, name: str) -> Point:
        """The (overridden) point ``name``; KeyError if the device has none."""
        return self._by_name[name]

    # -- scheduling ---------------------------------------------------------------------------
    @property
    def breaker_open(self) -> bool:
        """True while the device is considered unavailable."""
        return self.failures >= self.s.breaker_after

    def next_job(self) -> tuple[float, str] | None:
        """(due time, poll class) of this device's next poll."""
        if not self.due:
            return None
        cls = min(self.due, key=self.due.__getitem__)
        due = self.due[cls]
        if self.breaker_open:
            due = max(due, self.open_until)
        return due, cls

    def polled(self, cls: str, ok: bool, stretch: float = 1.0) -> tuple[bool, bool]:
        """Record a poll's outcome; returns (went offline now, came back now).

        ``stretch`` (the run's pace, >= 1) lengthens the period until the next poll of the class.
        """
        now = time.monotonic()
        due, period = self.due[cls], self.period[cls]
        if ok and now - due >= period:
            # The bus could not keep up: the polls that fell due meanwhile are this one, not a queue.
            self.skipped += int((now - due) // period)
        if stretch > 1.0:
            self._stretched += stretch - 1.0
            whole = int(self._stretched)
            self.skipped += whole
            self._stretched -= whole
        self.due[cls] = max(due + period * stretch, now)
        was_open = self.breaker_open
        if ok:
            self.failures = 0
            self.backoff = self.s.backoff_min_s
            came_back = self.online is False
            self.online = True
            return False, came_back
        self.failures += 1
        if self.breaker_open:
            self.open_until = now + self.backoff
            self.backoff = min(self.backoff * 2, self.s.backoff_max_s)
        went = self.breaker_open and not was_open and self.online is not False
        if self.breaker_open:
            self.online = False
        return went, False

    # -- values -------------------------------------------------------------------------------
    def decode(
        self, block: Block, values: Sequence[int] | Sequence[bool], ts: float, clock: ClockQuality
    ) -> list[Reading]:
        """Readings for the points of ``block`` from the values read (the whole block at once)."""
        prep = self._blocks.get(id(block))
        if prep is None or prep.block is not block:
            if len(self._blocks) > 64:  # plans were rebuilt many times (refused blocks): start afresh
                self._blocks.clear()
            prep = self._blocks[id(block)] = _Prepared(block, self.profile)
        decoded = prep.decoder.decode(values)
        judged = None
        for i, p in prep.judge:
            quality, meta = judge(p, decoded[i])
            if quality is not Quality.GOOD:
                if judged is None:
                    judged = {}
                judged[i] = (quality, meta)
        return telemetry_readings(self.name, prep.names, decoded, ts, clock, judged)

    def decode_points(
        self, block: Block, values: Sequence[int] | Sequence[bool], ts: float, clock: ClockQuality
    ) -> list[Reading]:
        """Readings for the points of ``block``, one decoder call and one ``Reading()`` per point.

        The reference :meth:`decode` must agree with (tests), and the baseline of the benches.
        """
        out = []
        decoders = self._decoders
        for p in block.points:
            lo = p.address - block.address
            if p.table in BIT_TABLES:
                value: int | float | str | bool = bool(values[lo])
            else:
                fn = decoders.get(p.name)
                if fn is None:
                    fn = decoders[p.name] = make_decoder(
                        p.type,
                        self.profile.byte_order_of(p),
                        self.profile.word_order_of(p),
                        p.bit,
                        p.width,
                        p.scale,
                        p.offset,
                    )
                value = fn([int(v) for v in values[lo : lo + p.registers()]])
            quality, meta = judge(p, value)
            out.append(Reading(self.name, p.name, value, ts, p.unit, quality, clock=clock, meta=meta))
        return out

    def encode(self, p: Point, value: float | int | bool | str) -> list[int] | bool:
        """What to write for ``value`` (registers, or a coil state); :class:`WriteRefused` if not allowed."""
        where = f"{self.name}.{p.name}"
        if not p.writable:
            raise WriteRefused(f"{where} is not writable (profile {self.profile.model})")
        if p.table == "coil":
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise WriteRefused(f"{where} is a coil: write true or false, not {value!r}")
            return bool(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and out_of_range(p, value):
            raise WriteRefused(f"{where}: {value!r} is outside [{p.min}, {p.max}]")
        try:
            raw: int | float | str | bool = value
            if p.type not in ("string", "bool"):
                raw = unscale(float(value), p.type, p.scale, p.offset)
            return encode_raw(
                raw, p.type, self.profile.byte_order_of(p), self.profile.word_order_of(p), p.count
            )
        except (ValueError, TypeError) as exc:
            raise WriteRefused(f"{where}: {exc}") from exc


class _Prepared:
    """What decoding one block needs, worked out once: its decoder, names and units, points to judge."""

    __slots__ = ("block", "decoder", "judge", "names")

    def __init__(self, block: Block, profile: Profile) -> None:
        self.block = block
        self.decoder = BlockDecoder(block, profile)
        self.names = [(p.name, p.unit) for p in block.points]
        # Integers without a plausible range are always GOOD; everything else is judged per value.
        self.judge = [
            (i, p)
            for i, p in enumerate(block.points)
            if p.min is not None or p.max is not None or (p.type not in INTEGER_TYPES and p.table not in BIT_TABLES)
        ]


def judge(p: Point, value: object) -> tuple[Quality, dict[str, str] | None]:
    """Quality of a decoded value: BAD when it is not a finite number or lies outside the plausible range."""
    if isinstance(value, float) and not math.isfinite(value):
        return Quality.BAD, {"reason": "not a finite number"}
    if isinstance(value, (int, float)) and not isinstance(value, bool) and out_of_range(p, value):
        return Quality.BAD, {"reason": f"outside plausible range [{p.min}, {p.max}]"}
    return Quality.GOOD, None


def out_of_range(p: Point, value: float) -> bool:
    """True when ``value`` lies outside the point's plausible range."""
    return (p.min is not None and value < p.min) or (p.max is not None and value > p.max)


def apply_overrides(profile: Profile, overrides: dict[str, dict[str, object]]) -> list[Point]:
    """The profile's points with site overrides applied; ``enabled: false`` drops a point."""
    out = []
    for p in profile.points:
        ov = dict(overrides.get(p.name, {}))
        if ov.pop("enabled", True) is False:
            continue
        out.append(_overridden(p, ov) if ov else p)
    return out


def _overridden(p: Point, changes: dict[str, object]) -> Point:
    """The point with a site's changes; a runtime point was checked with them before the agent started."""
    if dataclasses.is_dataclass(p):
        return cast(Any, dataclasses.replace)(p, **changes)
    return type(p).model_validate({**p.model_dump(exclude_none=True), **changes})
