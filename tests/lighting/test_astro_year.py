"""A simulated year of Bắc Ninh nights: the controller switches the relay at sunset and sunrise (plus
offsets), checked against astral and against an independent algorithm (USNO Almanac for Computers)."""

from __future__ import annotations

import asyncio
import datetime as dt

from astral import Observer
from astral.sun import sunrise, sunset

from control.lighting.config import LightingConfig
from tests.lighting.conftest import BAC_NINH, TZ, duty, lighting_dict, make_controller, relay
from tests.lighting.solar_reference import almanac_sun_time

ON_OFFSET_MIN = 10.0
OFF_OFFSET_MIN = -15.0
STEP_S = 20


def first_change(ctl, pins, start: dt.datetime, want_on: bool, span_s: int = 600) -> dt.datetime:
    """Step the controller every STEP_S from ``start``; the first time the relay shows ``want_on``."""
    loop = asyncio.new_event_loop()
    try:
        for k in range(0, span_s, STEP_S):
            t = start + dt.timedelta(seconds=k)
            loop.run_until_complete(ctl.step(t.timestamp(), t.timestamp()))
            if relay(pins, 17) == want_on:
                return t
    finally:
        loop.close()
    raise AssertionError(f"relay never went {'on' if want_on else 'off'} after {start}")


def test_year_of_switching_in_bac_ninh(pins):
    cfg = LightingConfig.model_validate(
        lighting_dict(
            astro={
                "switch_on": {"event": "sunset", "offset_min": ON_OFFSET_MIN},
                "switch_off": {"event": "sunrise", "offset_min": OFF_OFFSET_MIN},
            },
        )
    )
    ctl = make_controller(cfg, pins)
    obs = Observer(*BAC_NINH)
    worst_almanac = 0.0
    levels_at_23h: dict[dt.date, int] = {}
    loop = asyncio.new_event_loop()
    for i in range(365):
        day = dt.date(2026, 1, 1) + dt.timedelta(days=i)
        nxt = day + dt.timedelta(days=1)
        want_on = sunset(obs, day, tzinfo=TZ) + dt.timedelta(minutes=ON_OFFSET_MIN)
        want_off = sunrise(obs, nxt, tzinfo=TZ) + dt.timedelta(minutes=OFF_OFFSET_MIN)
        noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=TZ)
        loop.run_until_complete(ctl.step(noon.timestamp(), noon.timestamp()))
        assert not relay(pins, 17), f"lamps on at noon {day}"
        on_at = first_change(ctl, pins, want_on - dt.timedelta(minutes=5), True)
        assert dt.timedelta(0) <= on_at - want_on < dt.timedelta(seconds=STEP_S), (day, on_at, want_on)
        late = dt.datetime(day.year, day.month, day.day, 23, tzinfo=TZ)
        loop.run_until_complete(ctl.step(late.timestamp(), late.timestamp()))
        assert relay(pins, 17), f"lamps off at 23:00 on {day}"
        levels_at_23h[day] = duty(pins, 18)
        off_at = first_change(ctl, pins, want_off - dt.timedelta(minutes=5), False)
        assert dt.timedelta(0) <= off_at - want_off < dt.timedelta(seconds=STEP_S), (nxt, off_at, want_off)
        # Independent check of the sun times themselves.
        ref_set = almanac_sun_time(day, *BAC_NINH, rising=False) + dt.timedelta(minutes=ON_OFFSET_MIN)
        ref_rise = almanac_sun_time(nxt, *BAC_NINH, rising=True) + dt.timedelta(minutes=OFF_OFFSET_MIN)
        worst_almanac = max(
            worst_almanac, abs((on_at - ref_set).total_seconds()), abs((off_at - ref_rise).total_seconds())
        )
    loop.close()
    assert worst_almanac <= 90, f"switching differs from the USNO almanac by up to {worst_almanac:.0f} s"
    # 22:00 step of the standard profile is 70 %; Tết 2026 (17 Feb) nights 16-19 Feb run the festive 100 %.
    tet_nights = {dt.date(2026, 2, d) for d in (16, 17, 18, 19)}
    assert {d for d, lv in levels_at_23h.items() if lv == 100} == tet_nights
    assert all(lv == 70 for d, lv in levels_at_23h.items() if d not in tet_nights)


def test_known_sun_times_for_bac_ninh():
    """Solstices at 21.19 N 106.08 E (UTC+7): astral and the almanac agree within a minute.

    The pinned HH:MM values are regression anchors (rounded from these two computations, which agree);
    the independent evidence is the almanac algorithm, not these numbers.
    """
    obs = Observer(*BAC_NINH)
    for day, rise_hm, set_hm in (
        (dt.date(2026, 6, 21), (5, 15), (18, 40)),
        (dt.date(2026, 12, 21), (6, 28), (17, 19)),
    ):
        rise = sunrise(obs, day, tzinfo=TZ)
        sett = sunset(obs, day, tzinfo=TZ)
        for got, hm in ((rise, rise_hm), (sett, set_hm)):
            expect = dt.datetime(day.year, day.month, day.day, *hm, tzinfo=TZ)
            assert abs((got - expect).total_seconds()) <= 60, (got, expect)
        assert abs((rise - almanac_sun_time(day, *BAC_NINH, rising=True)).total_seconds()) <= 60
        assert abs((sett - almanac_sun_time(day, *BAC_NINH, rising=False)).total_seconds()) <= 60
