"""Property tests: a command body never crashes the handler and a refused one changes nothing; the
schedule's decision is always a valid state, overrides always win until they expire; photocell
decisions never leave the window around the astro times."""

from __future__ import annotations

import copy
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from control.lighting.astro import AstroClock
from control.lighting.config import LightingConfig
from control.lighting.controller import LightingController
from control.lighting.outputs import OutputState
from control.lighting.photocell import SensorWindow
from control.lighting.schedule import Schedule
from control.lighting.state import LightingState
from tests.lighting.conftest import BAC_NINH, lighting_dict

CFG = LightingConfig.model_validate(lighting_dict(max_override_s=86400))
ASTRO = AstroClock(*BAC_NINH, "Asia/Ho_Chi_Minh", CFG.astro)
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
YEAR = 366 * 86400


class NullOutput:
    async def apply(self, on: bool, level: int) -> None:
        return None

    async def read_back(self) -> OutputState:
        return OutputState(False, 0)

    async def heartbeat(self) -> None:
        return None

    async def close(self) -> None:
        return None


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["c1", "c2", "route-1", "park", "all", "standard", "economy", "festive", "zzz"]),
)
bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["action", "circuit", "group", "all", "level", "duration_s", "profile", "id", "x"]),
        st.one_of(values, st.sampled_from(["override", "clear_override", "switch_profile", "recalibrate"])),
        max_size=7,
    ),
    values,
    st.lists(values, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(body=bodies, now=st.floats(T0, T0 + YEAR))
def test_commands_never_crash_and_refusals_change_nothing(body, now):
    ctl = LightingController(
        "p", CFG, ASTRO, {c.name: NullOutput() for c in CFG.circuits}, state=LightingState()
    )
    before = (copy.deepcopy(ctl.state.overrides), copy.deepcopy(ctl.state.profiles))
    out = ctl.apply_command(body, now)
    assert out.outcome in ("accepted", "refused")
    if out.outcome == "refused":
        assert out.reason
        assert (ctl.state.overrides, ctl.state.profiles) == before
    for ov in ctl.state.overrides.values():
        assert 0 <= ov.level <= 100
        assert now < ov.until <= now + CFG.max_override_s


@settings(max_examples=150, deadline=None)
@given(
    now=st.floats(T0, T0 + YEAR),
    override=st.one_of(st.none(), st.tuples(st.integers(0, 100), st.floats(-3600, 3600))),
    trusted=st.booleans(),
)
def test_decisions_are_valid_and_overrides_win_until_expiry(now, override, trusted):
    state = LightingState()
    if override is not None:
        from control.lighting.state import Override

        state.overrides["c1"] = Override(override[0], now + override[1], now - 60)
    decisions = Schedule(CFG, ASTRO, state).decide(now, trusted=trusted)
    assert set(decisions) == {"c1", "c2"}
    for d in decisions.values():
        assert 0 <= d.level <= 100
        assert d.on == (d.level > 0)
    if override is not None and now + override[1] > now:
        assert decisions["c1"].reason == "override"
        assert decisions["c1"].level == override[0]
    elif not trusted:
        assert decisions["c1"].reason == "default"
    else:
        assert decisions["c1"].reason != "override"


@settings(max_examples=150, deadline=None)
@given(
    night=st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31)),
    offsets=st.lists(st.integers(-300, 300), min_size=1, max_size=40),
    readings=st.lists(st.sampled_from([True, False, None]), min_size=40, max_size=40),
    window=st.integers(5, 60),
)
def test_sensor_never_switches_outside_its_window(night, offsets, readings, window):
    times = ASTRO.night(night)
    sw = SensorWindow(window)
    w = dt.timedelta(minutes=window)
    for k, off in enumerate(sorted(offsets)):
        for anchor in (times.on, times.off):
            t = anchor + dt.timedelta(minutes=off)
            lit = sw.lit(t, times, readings[k])
            if t < times.on - w or t >= times.off + w:
                assert not lit
            elif times.on + w <= t < times.off - w:
                assert lit
