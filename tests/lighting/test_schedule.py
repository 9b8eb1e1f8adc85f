"""Dimming profiles through the night, calendar rules (Tết, holidays) with noon-to-noon nights,
the photocell window, and the default light state when the clock is not trusted."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from control.lighting.calendar import lunar_new_year, public_holidays, rule_for_night
from control.lighting.config import CalendarRule, LightingConfig
from kernel.readings import ClockQuality
from tests.lighting.conftest import duty, lighting_dict, local_ts, make_controller, relay


def run(ctl, ts: float, mono: float | None = None, clock: ClockQuality = ClockQuality.SYNCED):
    return asyncio.run(ctl.step(ts, ts if mono is None else mono, clock))


@pytest.mark.parametrize(
    ("hm", "level_c1", "level_c2"),
    [
        ((18, 30), 100, 80),  # after sunset: start levels
        ((21, 30), 100, 40),  # park economy steps at 21:00
        ((22, 15), 70, 40),
        ((23, 59), 70, 40),
        ((0, 0), 50, 40),  # after midnight belongs to the same night
        ((3, 0), 50, 40),
        ((4, 45), 80, 40),
    ],
)
def test_dimming_profile_steps(pins, hm, level_c1, level_c2):
    cfg = LightingConfig.model_validate(lighting_dict())
    ctl = make_controller(cfg, pins)
    day = dt.date(2026, 3, 10) if hm[0] >= 12 else dt.date(2026, 3, 11)
    run(ctl, local_ts(day.year, day.month, day.day, *hm))
    assert relay(pins, 17)
    assert relay(pins, 22)
    assert duty(pins, 18) == level_c1
    assert duty(pins, 23) == level_c2


def test_profile_level_zero_switches_off(pins):
    d = lighting_dict()
    d["profiles"][0]["steps"][1]["level"] = 0  # midnight: off
    ctl = make_controller(LightingConfig.model_validate(d), pins)
    run(ctl, local_ts(2026, 3, 10, 23, 0))
    assert relay(pins, 17)
    run(ctl, local_ts(2026, 3, 11, 1, 0))
    assert not relay(pins, 17)
    run(ctl, local_ts(2026, 3, 11, 4, 40))
    assert relay(pins, 17)
    assert duty(pins, 18) == 80


def test_tet_dates_from_vietnamese_calendar():
    # Vietnamese lunar calendar (UTC+7): 2030 differs from the Chinese New Year (3 February).
    assert lunar_new_year(2026) == dt.date(2026, 2, 17)
    assert lunar_new_year(2027) == dt.date(2027, 2, 6)
    assert lunar_new_year(2030) == dt.date(2030, 2, 2)
    assert dt.date(2026, 9, 2) in public_holidays(2026)


def test_calendar_nights_run_noon_to_noon():
    tet = CalendarRule(name="tet", profile="festive", lunar_new_year=True, day_offset=-1, nights=2)
    assert rule_for_night([tet], dt.date(2026, 2, 15)) is None
    assert rule_for_night([tet], dt.date(2026, 2, 16)) is tet  # giao thừa night
    assert rule_for_night([tet], dt.date(2026, 2, 17)) is tet
    assert rule_for_night([tet], dt.date(2026, 2, 18)) is None
    # A rule anchored on 1 January reaching back into the previous year's last night.
    ny = CalendarRule(name="ny", profile="festive", annual=["01-01"], day_offset=-1)
    assert rule_for_night([ny], dt.date(2026, 12, 31)) is ny
    hi = CalendarRule(name="hi", profile="economy", dates=[dt.date(2026, 12, 31)], priority=5)
    assert rule_for_night([ny, hi], dt.date(2026, 12, 31)) is hi


def test_tet_profile_holds_until_noon_next_day(pins):
    ctl = make_controller(LightingConfig.model_validate(lighting_dict()), pins)
    run(ctl, local_ts(2026, 2, 16, 23, 30))  # giao thừa night
    assert duty(pins, 18) == 100
    run(ctl, local_ts(2026, 2, 20, 4, 0))  # morning of the 20th: still night of the 19th (Tết rule)
    assert duty(pins, 18) == 100
    run(ctl, local_ts(2026, 2, 20, 23, 30))  # night of the 20th: back to the standard profile
    assert duty(pins, 18) == 70


def test_default_light_state_when_clock_untrusted(pins):
    d = lighting_dict(default_light_state={"level": 60})
    ctl = make_controller(LightingConfig.model_validate(d), pins)
    readings = run(ctl, local_ts(2026, 6, 1, 13, 0), clock=ClockQuality.UNSYNCED)
    assert relay(pins, 17)
    assert duty(pins, 18) == 60
    assert any(r.point == "c1.mode" and r.value == "default" for r in readings)
    run(ctl, local_ts(2026, 6, 1, 13, 0), clock=ClockQuality.RTC)  # an RTC time is trusted
    assert not relay(pins, 17)


def test_outputs_start_in_default_state_before_first_step(pins):
    d = lighting_dict(default_light_state={"level": 40})
    ctl = make_controller(LightingConfig.model_validate(d), pins)
    assert relay(pins, 17)
    assert duty(pins, 18) == 40
    assert ctl.circuits["c1"].commanded is None


def photocell_cfg(window_min: float = 30, debounce_s: float = 0) -> LightingConfig:
    return LightingConfig.model_validate(
        lighting_dict(
            photocell={"pin": 5, "dark_when": "high", "window_min": window_min, "debounce_s": debounce_s}
        )
    )


def test_photocell_switches_on_early_inside_window(pins):
    ctl = make_controller(photocell_cfg(), pins)
    sunset = ctl.schedule.astro.night(dt.date(2026, 11, 20)).on.timestamp()
    cell = pins.pin(5)
    cell.drive_high()  # dark (storm) an hour before sunset: outside the window, ignored
    run(ctl, sunset - 3600)
    assert not relay(pins, 17)
    run(ctl, sunset - 20 * 60)  # inside the 30 min window: dark counts
    assert relay(pins, 17)
    cell.drive_low()  # a lightning flash: the evening decision holds
    run(ctl, sunset - 10 * 60)
    assert relay(pins, 17)


def test_photocell_light_delays_until_window_end(pins):
    ctl = make_controller(photocell_cfg(), pins)
    times = ctl.schedule.astro.night(dt.date(2026, 11, 20))
    pins.pin(5).drive_low()  # sensor says light (dirty or facing a floodlight)
    run(ctl, times.on.timestamp() + 10 * 60)
    assert not relay(pins, 17)
    run(ctl, times.on.timestamp() + 30 * 60)  # window over: astro clock decides
    assert relay(pins, 17)
    # Morning: light 20 min before sunrise (inside window) switches off early ...
    run(ctl, times.off.timestamp() - 40 * 60)
    assert relay(pins, 17)
    run(ctl, times.off.timestamp() - 20 * 60)
    assert not relay(pins, 17)


def test_photocell_stuck_dark_cannot_keep_lamps_on_by_day(pins):
    ctl = make_controller(photocell_cfg(window_min=20), pins)
    times = ctl.schedule.astro.night(dt.date(2026, 11, 20))
    pins.pin(5).drive_high()  # stuck dark
    run(ctl, times.off.timestamp() + 5 * 60)
    assert relay(pins, 17)
    run(ctl, times.off.timestamp() + 20 * 60)
    assert not relay(pins, 17)


def test_photocell_debounce(pins):
    ctl = make_controller(photocell_cfg(debounce_s=60), pins)
    on = ctl.schedule.astro.night(dt.date(2026, 11, 20)).on.timestamp()
    pins.pin(5).drive_high()
    run(ctl, on - 25 * 60, mono=1000.0)
    assert not relay(pins, 17)  # dark for 0 s
    run(ctl, on - 24 * 60, mono=1061.0)
    assert relay(pins, 17)
