"""Feature extraction for the farm models, in numpy only.

The training scripts (``models/farm/training``) import these same functions, so the features the
device computes are the features the models were trained on. Missing readings are NaN everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# ---------------------------------------------------------------- irrigation-need model (daily)
WINDOW_DAYS = 7
CROPS: tuple[str, ...] = ("maize", "tomato", "soybean")
N_IRRIGATION_FEATURES = 47
_DEFAULTS = {"tmax": 28.0, "tmin": 20.0, "rh": 80.0}


@dataclass(frozen=True)
class PlotInfo:
    """What the advisor knows about a plot: soil water limits (m³/m³), crop, planting, threshold."""

    field_capacity: float
    wilting_point: float
    crop: str
    smt_percent: float  # irrigate when the root zone falls below this share of total available water
    latitude_deg: float = 21.1


def _ra(lat_deg: float, doy: FloatArray) -> FloatArray:
    """Extraterrestrial radiation (FAO-56 eq. 21), MJ m-2 day-1."""
    phi = np.deg2rad(lat_deg)
    dr = 1 + 0.033 * np.cos(2 * np.pi * doy / 365)
    decl = 0.409 * np.sin(2 * np.pi * doy / 365 - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(decl), -1.0, 1.0))
    return np.asarray(
        24 * 60 / np.pi * 0.0820 * dr * (ws * np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.sin(ws)),
        dtype=np.float64,
    )


def hargreaves_et0(tmax: FloatArray, tmin: FloatArray, doy: FloatArray, lat_deg: float) -> FloatArray:
    """Reference ET0 from temperature alone (Hargreaves-Samani, FAO-56 eq. 52), mm/day.

    The device has no radiation or wind sensor, so the model sees this estimate; the simulation that
    made the labels used full Penman-Monteith ET0 from ``refet``.
    """
    tmean = (tmax + tmin) / 2.0
    spread = np.sqrt(np.clip(tmax - tmin, 0.0, None))
    return np.asarray(0.0023 * (tmean + 17.8) * spread * _ra(lat_deg, doy) * 0.408, dtype=np.float64)


def _fill(x: FloatArray, default: float) -> tuple[FloatArray, int]:
    """Forward-fill NaN, then back-fill, then ``default``; return the series and how many were missing."""
    x = np.array(x, dtype=np.float64)
    missing = int(np.isnan(x).sum())
    if missing == 0:
        return x, 0
    if missing == len(x):
        return np.full_like(x, default), missing
    idx = np.where(~np.isnan(x), np.arange(len(x)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    first = int(np.argmax(~np.isnan(x)))
    out[:first] = x[first]
    return out, missing


def irrigation_features(
    sm_top: FloatArray,
    sm_sub: FloatArray,
    tmax: FloatArray,
    tmin: FloatArray,
    rh: FloatArray,
    rain: FloatArray,
    doy: FloatArray,
    days_after_planting: float,
    plot: PlotInfo,
) -> npt.NDArray[np.float32]:
    """The 47 features of one plot-day from the last ``WINDOW_DAYS`` days (oldest first, today last).

    Soil moisture is volumetric (m³/m³) at 0–20 cm and 20–50 cm, daily means; temperatures in °C,
    humidity in %, rain in mm/day. Missing days are NaN.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (sm_top, sm_sub, tmax, tmin, rh, rain, doy)]
    if any(a.shape != (WINDOW_DAYS,) for a in arrays):
        raise ValueError(f"every daily series must have shape ({WINDOW_DAYS},)")
    # Non-finite values are missing; the rest is held to physically possible ranges.
    limits = [(0.0, 1.0), (0.0, 1.0), (-30.0, 60.0), (-30.0, 60.0), (0.0, 100.0), (0.0, 500.0), (1.0, 366.0)]
    s_top, s_sub, t_x, t_n, r_h, r_n, d_y = (
        np.clip(np.where(np.isfinite(a), a, np.nan), lo, hi) for a, (lo, hi) in zip(arrays, limits, strict=True)
    )
    fc, wp = plot.field_capacity, plot.wilting_point
    taw = max(fc - wp, 0.02)
    top, m_top = _fill(s_top, fc)
    sub, m_sub = _fill(s_sub, fc)
    t_x, _ = _fill(t_x, _DEFAULTS["tmax"])
    t_n, _ = _fill(t_n, _DEFAULTS["tmin"])
    r_h, _ = _fill(r_h, _DEFAULTS["rh"])
    r_n = np.nan_to_num(r_n, nan=0.0)
    d_y, _ = _fill(d_y, 180.0)
    et0 = hargreaves_et0(t_x, np.minimum(t_n, t_x), d_y, plot.latitude_deg)
    crop = np.zeros(len(CROPS))
    if plot.crop in CROPS:
        crop[CROPS.index(plot.crop)] = 1.0
    parts = [
        np.clip((fc - top) / taw, -1.5, 2.0),
        np.clip((fc - sub) / taw, -1.5, 2.0),
        np.log1p(r_n) / 3.0,
        et0 / 6.0,
        (t_x[-3:] - 28.0) / 6.0,
        (t_n[-3:] - 20.0) / 6.0,
        (r_h[-3:] - 80.0) / 15.0,
        [np.log1p(r_n.sum()) / 5.0, et0.sum() / 35.0],
        [float(np.clip(np.nan_to_num(days_after_planting), 0, 200)) / 120.0, (fc - 0.3) / 0.1, (wp - 0.15) / 0.1, plot.smt_percent / 100.0],
        crop,
        [(m_top + m_sub) / (2 * WINDOW_DAYS)],
    ]
    out = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts]).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def threshold_rule_score(sm_top_today: float, plot: PlotInfo) -> float:
    """The baseline rule's score: depletion of the top layer as a share of available water."""
    if np.isnan(sm_top_today):
        return 0.0
    return float((plot.field_capacity - sm_top_today) / max(plot.field_capacity - plot.wilting_point, 0.02))


# ---------------------------------------------------------------- sensor-fault detector (hourly)
FAULT_WINDOW_H = 72
FAULT_CLASSES: tuple[str, ...] = ("normal", "stuck", "spike", "drift", "dropout")
SENSOR_KINDS: tuple[str, ...] = ("soil_moisture", "temperature", "humidity", "rain")
# centre, scale per sensor kind (m³/m³, °C, %, mm/h); rain uses log1p before scaling.
_SCALE = {"soil_moisture": (0.30, 0.08), "temperature": (25.0, 6.0), "humidity": (80.0, 12.0), "rain": (0.0, 1.0)}
_STEP = {"soil_moisture": 0.01, "temperature": 1.0, "humidity": 3.0, "rain": 1.0}
N_FAULT_CHANNELS = 7 + len(SENSOR_KINDS)


def _run_lengths(flags: npt.NDArray[np.bool_]) -> FloatArray:
    """For each position, how many consecutive True flags end there."""
    idx = np.arange(len(flags))
    last_reset = np.maximum.accumulate(np.where(flags, 0, idx))
    return np.where(flags, idx - last_reset, 0).astype(np.float64)


def _norm(x: FloatArray, kind: str) -> FloatArray:
    if kind == "rain":
        return np.log1p(np.clip(x, 0.0, None)) / 2.0
    c, s = _SCALE[kind]
    return (x - c) / s


def fault_features(values: FloatArray, kind: str, rain: FloatArray | None = None) -> npt.NDArray[np.float32]:
    """Per-hour channels of one 72-hour window of one sensor, shape (72, N_FAULT_CHANNELS).

    Channels: scaled value, scaled step, exact-repeat flag, missing-or-zero flag, repeat-run length,
    deviation from the 7-hour running median, rain at the site (context; zeros when unknown), and a
    one-hot of the sensor kind. NaN marks a missing reading.
    """
    if kind not in SENSOR_KINDS:
        raise ValueError(f"unknown sensor kind {kind!r}; expected one of {SENSOR_KINDS}")
    x = np.asarray(values, dtype=np.float64)
    if x.shape != (FAULT_WINDOW_H,):
        raise ValueError(f"a fault window must have shape ({FAULT_WINDOW_H},), got {x.shape}")
    x = np.clip(np.where(np.isfinite(x), x, np.nan), -1e6, 1e6)
    missing = np.isnan(x)
    zero = (x == 0.0) & (kind != "rain")
    filled, _ = _fill(x, 0.0 if kind == "rain" else _SCALE[kind][0])
    filled = np.where(missing, 0.0, filled) if kind == "rain" else filled
    v = np.clip(_norm(np.where(missing, np.nan, x), kind), -6.0, 6.0)
    v = np.where(missing, 0.0, v)
    step = np.zeros(FAULT_WINDOW_H)
    step[1:] = np.diff(filled) / _STEP[kind]
    step = np.clip(step, -6.0, 6.0)
    both_valid = np.zeros(FAULT_WINDOW_H, dtype=bool)
    both_valid[1:] = ~missing[1:] & ~missing[:-1]
    repeat = np.zeros(FAULT_WINDOW_H, dtype=bool)
    repeat[1:] = both_valid[1:] & (x[1:] == x[:-1])
    if kind == "rain":
        repeat &= np.nan_to_num(x) > 0.0
    run = _run_lengths(repeat)
    padded = np.pad(_norm(filled, kind), 3, mode="edge")
    med = np.median(np.lib.stride_tricks.sliding_window_view(padded, 7), axis=1)
    dev = np.clip(_norm(filled, kind) - med, -6.0, 6.0)
    dev = np.where(missing, 0.0, dev)
    if rain is None:
        ctx = np.zeros(FAULT_WINDOW_H)
    else:
        r = np.asarray(rain, dtype=np.float64)
        if r.shape != (FAULT_WINDOW_H,):
            raise ValueError(f"the rain context must have shape ({FAULT_WINDOW_H},), got {r.shape}")
        ctx = np.log1p(np.clip(np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 500.0)) / 2.0
    onehot = np.zeros((FAULT_WINDOW_H, len(SENSOR_KINDS)))
    onehot[:, SENSOR_KINDS.index(kind)] = 1.0
    cols = np.stack([v, step, repeat, missing | zero, np.minimum(run / 24.0, 2.0), dev, ctx], axis=1)
    return np.concatenate([cols, onehot], axis=1).astype(np.float32)


def fault_rule(values: FloatArray, kind: str) -> int:
    """The baseline rules (dropout, stuck, Hampel spike; no drift check), as an index into FAULT_CLASSES."""
    x = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(x)
    zero = (x == 0.0) & (kind != "rain")
    if (missing | zero).sum() >= 3:
        return FAULT_CLASSES.index("dropout")
    valid = x[~missing]
    if kind != "rain" or (valid > 0).any():
        same = np.zeros(len(valid), dtype=bool)
        same[1:] = (valid[1:] == valid[:-1]) & ((kind != "rain") | (valid[1:] > 0))
        if len(valid) and _run_lengths(same).max() >= 6:
            return FAULT_CLASSES.index("stuck")
    if len(valid) >= 7:
        padded = np.pad(valid, 3, mode="edge")
        win = np.lib.stride_tricks.sliding_window_view(padded, 7)
        med = np.median(win, axis=1)
        mad = np.median(np.abs(win - med[:, None]), axis=1) * 1.4826
        floor = _STEP[kind] * 0.5
        if (np.abs(valid - med) > 5.0 * np.maximum(mad, floor)).any():
            return FAULT_CLASSES.index("spike")
    return FAULT_CLASSES.index("normal")
