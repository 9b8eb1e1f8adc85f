"""The local schedule: from a time (and the sensor) to each circuit's light state, no network involved.

Order of precedence for a circuit: a remote override that has not expired (and whose start is not in
the future: the wall clock went backwards); else, when the astro
clock (and sensor window) says lit, the level of the night's profile: a calendar rule's profile on
its nights, otherwise the group's profile (as switched by the centre, or as configured); else off.
When the schedule cannot be trusted (clock not set, no sun times) the default light state applies.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from control.lighting.astro import AstroClock, NightTimes, night_of
from control.lighting.calendar import rule_for_night
from control.lighting.config import CalendarRule, DimmingProfile, LightingConfig, night_minute
from control.lighting.photocell import SensorWindow
from control.lighting.state import LightingState

CLOCK_SLACK_S = 300.0


@dataclass(frozen=True)
class Decision:
    """A wanted state and why (``schedule``, ``profile:P``, ``calendar:R``, ``override``, ``default``)."""

    on: bool
    level: int
    reason: str


def profile_level(profile: DimmingProfile, local: dt.datetime) -> int:
    """The profile's level at local time ``local`` (steps in noon-to-noon order)."""
    return _level(profile.start_level, [(night_minute(s.at), s.level) for s in profile.steps], local)


def _level(start: int, steps: list[tuple[int, int]], local: dt.datetime) -> int:
    now_minute = ((local.hour - 12) % 24) * 60 + local.minute
    level = start
    for minute, step_level in steps:
        if now_minute >= minute:
            level = step_level
    return level


class Schedule:
    """The site's lighting schedule."""

    def __init__(self, cfg: LightingConfig, astro: AstroClock, state: LightingState) -> None:
        self.cfg = cfg
        self.astro = astro
        self.state = state
        self.window = SensorWindow(cfg.photocell.window_min) if cfg.photocell is not None else None
        # Per-tick work stays small: profile steps, group profiles and each night's rule precomputed.
        self._steps = {
            p.name: (p.start_level, [(night_minute(s.at), s.level) for s in p.steps]) for p in cfg.profiles
        }
        self._group_profile = {g.name: g.profile for g in cfg.groups}
        self._rules: dict[dt.date, CalendarRule | None] = {}

    def rule(self, night: dt.date) -> CalendarRule | None:
        """The calendar rule of ``night`` (cached for the few nights around now)."""
        if night not in self._rules:
            if len(self._rules) > 8:
                self._rules.clear()
            self._rules[night] = rule_for_night(self.cfg.calendar, night)
        return self._rules[night]

    def night(self, now: float) -> tuple[dt.datetime, NightTimes]:
        """Local time and the astro times of the night ``now`` (UTC seconds) falls in."""
        local = dt.datetime.fromtimestamp(now, self.astro.tz)
        return local, self.astro.night(night_of(local))

    def lit(self, local: dt.datetime, times: NightTimes, dark: bool | None) -> bool:
        """Astro clock, or astro clock with the sensor window when a sensor is configured."""
        if self.window is None:
            return times.on <= local < times.off
        return self.window.lit(local, times, dark)

    def decide(self, now: float, dark: bool | None = None, trusted: bool = True) -> dict[str, Decision]:
        """Every circuit's decision at UTC time ``now``."""
        default = self.cfg.default_light_state
        decisions: dict[str, Decision] = {}
        scheduled: dict[str, Decision] = {}
        try:
            if not trusted:
                raise ValueError("wall clock not trusted")
            local, times = self.night(now)
            lit = self.lit(local, times, dark)
            rule = self.rule(times.night)
            for c in self.cfg.circuits:
                if not lit:
                    scheduled[c.name] = Decision(False, 0, "schedule")
                    continue
                if rule is not None:
                    name, reason = rule.profile, f"calendar:{rule.name}"
                else:
                    name = self.state.profiles.get(c.group, self._group_profile[c.group])
                    reason = f"profile:{name}"
                level = _level(*self._steps[name], local)
                scheduled[c.name] = Decision(level > 0, level, reason)
        except (ValueError, LookupError):
            scheduled = {c.name: Decision(default.on, default.level, "default") for c in self.cfg.circuits}
        for c in self.cfg.circuits:
            ov = self.state.overrides.get(c.name)
            # Valid only between when it was set and when it ends: a wall clock that went backwards
            # (a reboot without RTC before NTP) must not stretch an override over decades.
            if ov is not None and ov.set_at - CLOCK_SLACK_S <= now < ov.until:
                decisions[c.name] = Decision(ov.level > 0, ov.level, "override")
            else:
                decisions[c.name] = scheduled[c.name]
        return decisions
