"""Property tests of the farm feature code: no crash, fixed shapes, finite values, NaN handling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.farm.features import (
    FAULT_CLASSES,
    FAULT_WINDOW_H,
    N_FAULT_CHANNELS,
    N_IRRIGATION_FEATURES,
    SENSOR_KINDS,
    WINDOW_DAYS,
    PlotInfo,
    fault_features,
    fault_rule,
    hargreaves_et0,
    irrigation_features,
)
from models.farm.history import daily, hourly

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
week = arrays(np.float64, WINDOW_DAYS, elements=floats)
window = arrays(np.float64, FAULT_WINDOW_H, elements=floats)
PLOT = PlotInfo(0.33, 0.13, "maize", 70.0)


@settings(max_examples=150, deadline=None)
@given(week, week, week, week, week, week, st.floats(-10, 400), st.sampled_from(["maize", "tomato", "soybean", "rice"]))
def test_irrigation_features_any_input_gives_finite_fixed_shape(a, b, c, d, e, f, dap, crop):
    doy = np.arange(100, 100 + WINDOW_DAYS, dtype=float)
    x = irrigation_features(a, b, c, d, e, f, doy, dap, PlotInfo(0.4, 0.2, crop, 65.0))
    assert x.shape == (N_IRRIGATION_FEATURES,)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()


def test_irrigation_features_missing_soil_days_are_filled_and_counted():
    sm = np.array([0.30, np.nan, 0.28, 0.27, np.nan, np.nan, 0.25])
    full = np.array([0.30, 0.30, 0.28, 0.27, 0.27, 0.27, 0.25])
    weather = [np.full(WINDOW_DAYS, v) for v in (30.0, 22.0, 80.0, 0.0)]
    doy = np.arange(280, 287, dtype=float)
    with_gaps = irrigation_features(sm, full, *weather, doy, 20.0, PLOT)
    filled = irrigation_features(full, full, *weather, doy, 20.0, PLOT)
    # forward-filled soil values give the same depletion features; the missing share says 3 of 14
    np.testing.assert_allclose(with_gaps[:-1], filled[:-1])
    assert with_gaps[-1] == pytest.approx(3 / 14)
    assert filled[-1] == 0.0
    all_missing = irrigation_features(np.full(7, np.nan), np.full(7, np.nan), *weather, doy, 20.0, PLOT)
    assert all_missing[-1] == 1.0
    np.testing.assert_allclose(all_missing[:14], 0.0)  # taken as field capacity: no depletion


def test_irrigation_features_reject_wrong_window():
    with pytest.raises(ValueError, match="shape"):
        irrigation_features(*[np.zeros(6)] * 7, 10.0, PLOT)


def test_drier_soil_means_more_depletion():
    weather = [np.full(WINDOW_DAYS, v) for v in (30.0, 22.0, 80.0, 0.0)]
    doy = np.arange(280, 287, dtype=float)
    wet = irrigation_features(np.full(7, 0.32), np.full(7, 0.32), *weather, doy, 20.0, PLOT)
    dry = irrigation_features(np.full(7, 0.18), np.full(7, 0.32), *weather, doy, 20.0, PLOT)
    assert (dry[:7] > wet[:7]).all()


def test_hargreaves_is_plausible_for_hanoi():
    # about 2-5 mm/day through the year in the Red River delta (FAO-56 Hargreaves, temperature only)
    doy = np.array([15.0, 196.0])
    et0 = hargreaves_et0(np.array([20.0, 33.0]), np.array([14.0, 26.0]), doy, 21.0)
    assert 1.5 < et0[0] < 3.5
    assert 3.5 < et0[1] < 6.0


@settings(max_examples=200, deadline=None)
@given(window, st.sampled_from(SENSOR_KINDS), st.one_of(st.none(), window))
def test_fault_features_any_window_gives_finite_fixed_shape(x, kind, rain):
    f = fault_features(x, kind, rain)
    assert f.shape == (FAULT_WINDOW_H, N_FAULT_CHANNELS)
    assert f.dtype == np.float32
    assert np.isfinite(f).all()
    assert f[:, 7 + SENSOR_KINDS.index(kind)].min() == 1.0
    assert 0 <= fault_rule(x, kind) < len(FAULT_CLASSES)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, FAULT_WINDOW_H - 1), st.integers(1, FAULT_WINDOW_H), st.sampled_from(SENSOR_KINDS))
def test_dropout_hours_are_flagged(start, length, kind):
    x = np.full(FAULT_WINDOW_H, 21.5) if kind != "rain" else np.zeros(FAULT_WINDOW_H)
    end = min(FAULT_WINDOW_H, start + length)
    x[start:end] = np.nan
    f = fault_features(x, kind)
    flags = f[:, 3]
    assert flags[start:end].min() == 1.0
    assert flags[:start].sum() == 0
    assert flags[end:].sum() == 0
    assert (f[start:end, 0] == 0).all()  # missing values read as the scaled centre, not NaN


def test_stuck_run_length_grows():
    x = np.round(0.3 + 0.01 * np.sin(np.arange(FAULT_WINDOW_H) / 3), 4)
    x[40:] = x[40]
    f = fault_features(x, "soil_moisture")
    assert f[39, 4] == 0.0
    assert f[71, 4] == pytest.approx(31 / 24)
    assert FAULT_CLASSES[fault_rule(x, "soil_moisture")] == "stuck"


def test_fault_features_reject_wrong_window():
    with pytest.raises(ValueError, match="shape"):
        fault_features(np.zeros(10), "temperature")
    with pytest.raises(ValueError, match="unknown sensor kind"):
        fault_features(np.zeros(FAULT_WINDOW_H), "wind")


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(0, 300), elements=st.floats(0, 72 * 3600 - 1)), st.sampled_from(["mean", "sum", "last"]))
def test_hourly_bins_every_reading_once(offsets, how):
    ts = np.sort(offsets) + 1_000_000.0
    vals = np.ones(len(ts))
    out = hourly(ts, vals, 1_000_000.0 + 72 * 3600, 72, how)
    assert out.shape == (72,)
    if how == "sum":
        assert np.nansum(out) == pytest.approx(len(ts))
    occupied = np.unique(np.floor(offsets / 3600).astype(int))
    assert set(np.flatnonzero(np.isfinite(out))) == set(occupied)


def test_daily_aggregates_and_minimum_count():
    bounds = [0.0, 86400.0, 2 * 86400.0]
    ts = np.array([3600.0, 50000.0, 85000.0, 90000.0])
    vals = np.array([1.0, 5.0, 3.0, 7.0])
    assert daily(ts, vals, bounds, "max").tolist() == [5.0, 7.0]
    assert daily(ts, vals, bounds, "sum").tolist() == [9.0, 7.0]
    assert daily(ts, vals, bounds, "end")[0] == 3.0  # the last three hours of the day
    np.testing.assert_array_equal(daily(ts, vals, bounds, "min", min_count=2), [1.0, np.nan])
