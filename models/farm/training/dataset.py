"""Build the farm datasets from simulated seasons (development only).

``python -m models.farm.training.dataset`` simulates every season (AquaCrop) and writes
``build/farm/seasons.csv.gz``; the irrigation and fault datasets are then derived from it with fixed
seeds by :func:`irrigation_dataset` and :func:`fault_dataset`.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pandas as pd

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
    irrigation_features,
    threshold_rule_score,
)
from models.farm.training import config
from models.farm.training.seasons import sample_specs, simulate
from models.farm.training.weathergen import LAT_DEG, generate_years

SEASONS_FILE = config.WORK_DIR / "seasons.csv.gz"


def simulate_all() -> pd.DataFrame:
    """Simulate every season of every year and cache the result."""
    if SEASONS_FILE.exists():
        return pd.read_csv(SEASONS_FILE, parse_dates=["date"])
    config.WORK_DIR.mkdir(parents=True, exist_ok=True)
    weather = generate_years(config.YEARS.start, config.YEARS.stop, config.WEATHER_SEED)
    specs = sample_specs(config.YEARS, config.SEASONS_PER_YEAR, config.SEED)
    t0 = time.perf_counter()
    frames = [simulate(s, weather) for s in specs]
    print(f"simulated {len(specs)} seasons in {time.perf_counter() - t0:.1f} s")
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(SEASONS_FILE, index=False, float_format="%.5g")
    return pd.read_csv(SEASONS_FILE, parse_dates=["date"])


def observed(season: pd.DataFrame, rng: np.random.Generator) -> dict[str, npt.NDArray[np.float64]]:
    """What the plot's sensors would report as daily values: bias, noise and a few missing days."""
    n = len(season)
    out: dict[str, npt.NDArray[np.float64]] = {}
    for layer in ("sm_top", "sm_sub"):
        bias = rng.normal(0.0, 0.015)
        x = season[layer].to_numpy() + bias + rng.normal(0.0, 0.004, n)
        x[rng.random(n) < 0.02] = np.nan
        out[layer] = x
    out["tmax"] = season["tmax"].to_numpy() + rng.normal(0.0, 0.3, n)
    out["tmin"] = season["tmin"].to_numpy() + rng.normal(0.0, 0.3, n)
    out["rh"] = np.clip(season["rh"].to_numpy() + rng.normal(0.0, 2.0, n), 20, 100)
    out["rain"] = season["rain"].to_numpy() * np.clip(rng.normal(1.0, 0.05, n), 0.8, 1.2)
    # Reported at the sensors' resolution (0.1 % VWC, 0.1 °C, 0.1 % RH, 0.1 mm).
    return {k: np.round(v, 3 if k.startswith("sm_") else 1) for k, v in out.items()}


def irrigation_dataset(seasons: pd.DataFrame) -> dict[str, npt.NDArray[np.generic]]:
    """Features, labels (irrigated on day t+1 or t+2), rule scores, years and season ids."""
    xs, ys, rules, years, sids = [], [], [], [], []
    for sid, season in seasons.groupby("season_id", sort=True):
        rng = np.random.default_rng(config.SEED + 1000 * int(sid))
        obs = observed(season, rng)
        first = season.iloc[0]
        plot = PlotInfo(float(first.fc), float(first.wp), str(first.crop), float(first.smt), LAT_DEG)
        irr = season["irrigation"].to_numpy() > 0
        doy = season["date"].dt.day_of_year.to_numpy().astype(float)
        for t in range(WINDOW_DAYS - 1, len(season) - 2):
            w = slice(t - WINDOW_DAYS + 1, t + 1)
            xs.append(irrigation_features(
                obs["sm_top"][w], obs["sm_sub"][w], obs["tmax"][w], obs["tmin"][w], obs["rh"][w],
                obs["rain"][w], doy[w], float(t + 1), plot,
            ))
            ys.append(bool(irr[t + 1] or irr[t + 2]))
            rules.append(threshold_rule_score(obs["sm_top"][t], plot))
            years.append(int(first.year))
            sids.append(int(sid))
    x = np.stack(xs)
    assert x.shape[1] == N_IRRIGATION_FEATURES
    return {"x": x, "y": np.array(ys, dtype=np.int8), "rule": np.array(rules, dtype=np.float32),
            "year": np.array(years, dtype=np.int16), "season": np.array(sids, dtype=np.int32)}


# ------------------------------------------------------------------ hourly streams and faults
def _ar1(n: int, rho: float, sigma: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Stationary AR(1) noise with standard deviation ``sigma`` (clouds, gusts, sensor self-heating)."""
    e = rng.normal(0.0, sigma * np.sqrt(1 - rho**2), n)
    out = np.empty(n)
    out[0] = rng.normal(0.0, sigma)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + e[i]
    return out


def _cosine_knots(hours: npt.NDArray[np.float64], t: npt.NDArray[np.float64],
                  v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Continuous curve through knots (t, v), eased with half-cosines between consecutive knots."""
    k = np.clip(np.searchsorted(t, hours, side="right") - 1, 0, len(t) - 2)
    frac = np.clip((hours - t[k]) / (t[k + 1] - t[k]), 0.0, 1.0)
    return v[k] + (v[k + 1] - v[k]) * (1 - np.cos(np.pi * frac)) / 2


def _sat_vp(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Saturation vapour pressure, kPa (FAO-56 eq. 11)."""
    return 0.6108 * np.exp(17.27 * t / (t + 237.3))


def hourly_streams(season: pd.DataFrame, rng: np.random.Generator) -> dict[str, npt.NDArray[np.float64]]:
    """Hourly soil moisture (0–20 cm), air temperature, humidity and rain for one season."""
    n = len(season)
    hours = np.arange(n * 24, dtype=float)
    day = (hours // 24).astype(int)
    rain_d = season["rain"].to_numpy()
    rain_h = np.zeros(n * 24)
    for wet_day in np.flatnonzero(rain_d > 0):
        length = int(rng.integers(2, 9))
        start = int(wet_day) * 24 + int(rng.integers(0, 24 - length + 1))
        rain_h[start: start + length] = rain_d[wet_day] * rng.dirichlet(np.ones(length))
    rain_h = np.round(rain_h / 0.2) * 0.2  # tipping bucket, 0.2 mm
    wet_share = np.zeros(n * 24)
    for d in range(n):
        seg = rain_h[d * 24:(d + 1) * 24]
        total = seg.sum()
        wet_share[d * 24:(d + 1) * 24] = np.cumsum(seg) / total if total > 0 else (np.arange(24) + 1) / 24
    sm = season["sm_top"].to_numpy()
    prev = np.concatenate([[sm[0]], sm[:-1]])
    sm_h = prev[day] + (sm - prev)[day] * wet_share
    sm_h = sm_h + rng.normal(0.0, 0.0015, n * 24) + rng.normal(0.0, 0.01)
    # Temperature: a continuous curve through each day's Tmin (about 06:00) and Tmax (about 14:00),
    # so weather trends across days are smooth, plus AR(1) noise; the timing shifts by site/season.
    tmax, tmin = season["tmax"].to_numpy(), season["tmin"].to_numpy()
    shift = rng.uniform(-1.0, 1.5)
    knots_t = np.ravel(np.column_stack([np.arange(n) * 24 + 6 + shift, np.arange(n) * 24 + 14 + shift]))
    knots_v = np.ravel(np.column_stack([tmin, tmax]))
    temp = _cosine_knots(hours, knots_t, knots_v) + _ar1(n * 24, 0.85, rng.uniform(0.2, 0.6), rng)
    # Humidity from a dew point that moves smoothly between days: high at night, low in the afternoon.
    tmean = (tmax + tmin) / 2
    ea = season["rh"].to_numpy() / 100 * _sat_vp(tmean)
    dew = 237.3 * np.log(ea / 0.6108) / (17.27 - np.log(ea / 0.6108))
    dew_h = np.interp(hours, np.arange(n) * 24 + 12.0, dew) + _ar1(n * 24, 0.9, 0.4, rng)
    raw_rh = 100 * _sat_vp(dew_h) / _sat_vp(temp) + _ar1(n * 24, 0.7, 1.0, rng)
    soft = 100 - 1.5 * np.logaddexp(0.0, (100 - raw_rh) / 1.5)  # saturates smoothly below 100 %
    rh = np.clip(soft + rng.normal(0.0, 0.3, n * 24), 20, 100)
    # Capacitive soil probes show a small daily wave from soil temperature.
    sm_h = sm_h + 0.0015 * np.sin(2 * np.pi * (hours - 9 - shift) / 24)
    return {
        "soil_moisture": np.round(sm_h, 3),
        "temperature": np.round(temp, 1),
        "humidity": np.round(rh, 1),
        "rain": np.round(rain_h, 1),
    }


RESOLUTION_DECIMALS = {"soil_moisture": 3, "temperature": 1, "humidity": 1, "rain": 1}
_SPIKE = {"soil_moisture": (0.08, 0.25), "temperature": (6.0, 20.0), "humidity": (15.0, 40.0), "rain": (15.0, 60.0)}
_DRIFT = {"soil_moisture": (0.04, 0.12), "temperature": (2.5, 7.0), "humidity": (8.0, 25.0)}


def inject(x: npt.NDArray[np.float64], kind: str, fault: str, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Return a copy of one window with one fault of the given kind."""
    y = x.copy()
    n = len(y)
    if fault == "stuck":
        t0 = int(rng.integers(0, n - 12))
        value = y[t0] if kind != "rain" else float(rng.choice([0.2, 0.4, 1.0, 2.0]))
        y[t0:] = value
    elif fault == "spike":
        lo, hi = _SPIKE[kind]
        for t in rng.choice(n, size=int(rng.integers(1, 4)), replace=False):
            sign = 1.0 if kind == "rain" else float(rng.choice([-1.0, 1.0]))
            y[t] = y[t] + sign * rng.uniform(lo, hi)
        if kind == "humidity":
            y = np.clip(y, 0.0, 100.0)
    elif fault == "drift":
        lo, hi = _DRIFT[kind]
        t0 = int(rng.integers(0, n - 24))
        total = rng.uniform(lo, hi) * float(rng.choice([-1.0, 1.0]))
        ramp = np.clip((np.arange(n) - t0) / (n - t0), 0.0, 1.0) * total
        y = y + ramp
    elif fault == "dropout":
        t0 = int(rng.integers(0, n - 6))
        length = int(rng.integers(6, n - t0 + 1))
        y[t0:t0 + length] = np.nan if (kind == "rain" or rng.random() < 0.5) else 0.0
    else:
        raise ValueError(fault)
    return np.round(y, RESOLUTION_DECIMALS[kind])


KEEP = {"train": 0.5, "validation": 0.5, "test": 0.21}


def fault_dataset(seasons: pd.DataFrame, stride_h: int = 36) -> dict[str, npt.NDArray[np.generic]]:
    """72-hour windows of every sensor, half of them with one injected fault.

    A fixed random share of the windows of each split (``KEEP``) is kept, to bound the run time.
    """
    keep_rng = np.random.default_rng(config.SEED + 3)
    xs, ys, rules, years, kinds, raws, ctxs, has_rain = [], [], [], [], [], [], [], []
    for sid, season in seasons.groupby("season_id", sort=True):
        rng = np.random.default_rng(config.SEED + 7 + 1000 * int(sid))
        streams = hourly_streams(season, rng)
        year = int(season.iloc[0].year)
        keep = KEEP[config.split_of(year)]
        is_test = config.split_of(year) == "test"
        total = len(streams["rain"])
        for start in range(0, total - FAULT_WINDOW_H + 1, stride_h):
            sl = slice(start, start + FAULT_WINDOW_H)
            rain_ctx = streams["rain"][sl]
            for k, kind in enumerate(SENSOR_KINDS):
                x = streams[kind][sl]
                label = 0
                faulty = rng.random() < 0.5
                if keep_rng.random() >= keep:
                    continue
                if faulty:
                    options = [f for f in FAULT_CLASSES[1:] if not (kind == "rain" and f == "drift")]
                    fault = str(rng.choice(options))
                    x = inject(x, kind, fault, rng)
                    label = FAULT_CLASSES.index(fault)
                ctx = rain_ctx if kind != "rain" else None
                xs.append(fault_features(x, kind, ctx))
                raws.append(x.astype(np.float32))
                ctxs.append(rain_ctx.astype(np.float32))
                has_rain.append(ctx is not None)
                ys.append(label)
                rules.append(fault_rule(x, kind) if is_test else -1)  # the rules are scored on test years only
                years.append(year)
                kinds.append(k)
    x_arr = np.stack(xs)
    assert x_arr.shape[1:] == (FAULT_WINDOW_H, N_FAULT_CHANNELS)
    return {"x": x_arr, "y": np.array(ys, dtype=np.int8), "rule": np.array(rules, dtype=np.int8),
            "year": np.array(years, dtype=np.int16), "kind": np.array(kinds, dtype=np.int8),
            "raw": np.stack(raws), "rain_ctx": np.stack(ctxs), "has_rain": np.array(has_rain)}


if __name__ == "__main__":
    simulate_all()
