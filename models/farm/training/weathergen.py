"""A Hanoi / Bắc Ninh-like daily weather generator (training data only, not station data).

Monthly normals are approximate values for Hà Nội (Láng station, about 30 km from Bắc Ninh city),
typed by hand from the climate table of the Vietnam Institute of Meteorology, Hydrology and Climate
Change (IMHEN) as reproduced in the public "Hanoi / Climate" encyclopedia table (1991–2020 normals);
they were not fetched at run time and are rounded. Annual rain ≈ 1,680 mm, most of it May–September;
the winter (November–March) is dry with drizzle (mưa phùn) in February–March.

Model: a first-order Markov chain for wet days, gamma-distributed wet-day amounts, AR(1) temperature
anomalies (cooler on wet days), humidity from the monthly normal plus a wet-day bump, solar radiation
from sunshine hours (Ångström, FAO-56 eq. 35), and ET0 from ``refet`` (ASCE/FAO-56 Penman-Monteith).
Each year has its own seed (``base_seed * 10_000 + year``), so a year is reproducible on its own.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

# month: (Tmax °C, Tmin °C, rain mm, rain days >= 1 mm, RH %, sunshine h/month)
HANOI_NORMALS: dict[int, tuple[float, float, float, float, float, float]] = {
    1: (19.5, 14.2, 19, 6, 80, 70),
    2: (20.2, 15.6, 26, 9, 84, 45),
    3: (23.0, 18.4, 44, 12, 86, 45),
    4: (27.3, 21.9, 90, 12, 86, 90),
    5: (31.6, 24.9, 188, 14, 81, 180),
    6: (33.0, 26.3, 240, 15, 80, 166),
    7: (33.0, 26.4, 288, 16, 81, 185),
    8: (32.0, 26.0, 318, 17, 84, 160),
    9: (31.0, 24.8, 265, 14, 82, 160),
    10: (28.8, 22.2, 130, 9, 79, 155),
    11: (25.5, 18.8, 43, 6, 77, 135),
    12: (22.0, 15.5, 23, 4, 76, 115),
}
LAT_DEG = 21.03  # Hà Nội / Bắc Ninh
ELEV_M = 6.0
WIND_MS = 1.8  # typical 2 m wind speed in the Red River delta lowlands
_PERSISTENCE = 0.35  # share of extra wet-after-wet probability (Markov chain)


def _daylength_h(lat_deg: float, doy: np.ndarray) -> np.ndarray:
    """FAO-56 eq. 25 and 34: maximum sunshine hours N."""
    phi = np.deg2rad(lat_deg)
    decl = 0.409 * np.sin(2 * np.pi * doy / 365 - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(decl), -1.0, 1.0))
    return 24.0 / np.pi * ws


def extraterrestrial_radiation(lat_deg: float, doy: np.ndarray) -> np.ndarray:
    """FAO-56 eq. 21: Ra in MJ m-2 day-1."""
    phi = np.deg2rad(lat_deg)
    dr = 1 + 0.033 * np.cos(2 * np.pi * doy / 365)
    decl = 0.409 * np.sin(2 * np.pi * doy / 365 - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(decl), -1.0, 1.0))
    return (
        24 * 60 / np.pi * 0.0820 * dr
        * (ws * np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.sin(ws))
    )


def generate_year(year: int, base_seed: int = 7) -> pd.DataFrame:
    """Daily weather for one calendar year: Date, MinTemp, MaxTemp, Precipitation, RH, Rs, ReferenceET."""
    import refet  # development-only dependency

    rng = np.random.default_rng(base_seed * 10_000 + year)
    days = pd.date_range(dt.date(year, 1, 1), dt.date(year, 12, 31), freq="D")
    n = len(days)
    month = days.month.to_numpy()
    doy = days.dayofyear.to_numpy().astype(float)
    tmax_n = np.array([HANOI_NORMALS[m][0] for m in month])
    tmin_n = np.array([HANOI_NORMALS[m][1] for m in month])
    rain_m = np.array([HANOI_NORMALS[m][2] for m in month])
    wetdays = np.array([HANOI_NORMALS[m][3] for m in month])
    rh_n = np.array([HANOI_NORMALS[m][4] for m in month])
    sun_m = np.array([HANOI_NORMALS[m][5] for m in month])
    mdays = days.days_in_month.to_numpy()

    # Interannual variation: a wetter or drier year, a warmer or cooler year.
    rain_factor = float(np.exp(rng.normal(0.0, 0.18)))
    t_offset = float(rng.normal(0.0, 0.5))

    p_wet = np.clip(wetdays / mdays, 0.02, 0.95)
    p11 = p_wet + _PERSISTENCE * (1 - p_wet)
    p01 = p_wet * (1 - p11) / (1 - p_wet)
    wet = np.zeros(n, dtype=bool)
    state = False
    for i in range(n):
        state = rng.random() < (p11[i] if state else p01[i])
        wet[i] = state
    shape = 0.75
    mean_amount = rain_m * rain_factor / np.maximum(wetdays, 1)
    rain = np.where(wet, rng.gamma(shape, mean_amount / shape), 0.0)

    anom_x = np.zeros(n)
    anom_n = np.zeros(n)
    ex, en = rng.normal(0, 1.6, n), rng.normal(0, 1.1, n)
    for i in range(1, n):
        anom_x[i] = 0.65 * anom_x[i - 1] + ex[i]
        anom_n[i] = 0.7 * anom_n[i - 1] + en[i]
    tmax = tmax_n + t_offset + anom_x - np.where(wet, 1.5, -0.4)
    tmin = tmin_n + t_offset + anom_n + np.where(wet, 0.3, -0.2)
    tmin = np.minimum(tmin, tmax - 1.0)

    rh = np.clip(rh_n + np.where(wet, 6.0, -2.0) + rng.normal(0, 4.0, n), 40.0, 99.0)
    big_n = _daylength_h(LAT_DEG, doy)
    sun_frac = np.clip(sun_m / mdays / big_n * np.where(wet, 0.45, 1.25) + rng.normal(0, 0.08, n), 0.0, 0.95)
    ra = extraterrestrial_radiation(LAT_DEG, doy)
    rs = (0.25 + 0.50 * sun_frac) * ra
    wind = np.clip(WIND_MS + rng.normal(0, 0.5, n), 0.5, 6.0)

    es_x = 0.6108 * np.exp(17.27 * tmax / (tmax + 237.3))
    es_n = 0.6108 * np.exp(17.27 * tmin / (tmin + 237.3))
    ea = rh / 100.0 * (es_x + es_n) / 2.0
    et0 = refet.Daily(
        tmin=tmin, tmax=tmax, ea=ea, rs=rs, uz=wind, zw=2.0, elev=ELEV_M,
        lat=LAT_DEG, doy=doy, method="asce", input_units={"lat": "deg"},
    ).eto()
    return pd.DataFrame({
        "Date": days,
        "MinTemp": np.round(tmin, 2),
        "MaxTemp": np.round(tmax, 2),
        "Precipitation": np.round(rain, 1),
        "RH": np.round(rh, 1),
        "Rs": np.round(rs, 2),
        "ReferenceET": np.round(np.asarray(et0, dtype=float), 2),
    })


def generate_years(first: int, last: int, base_seed: int = 7) -> pd.DataFrame:
    """Consecutive years ``first..last`` (inclusive), concatenated."""
    return pd.concat([generate_year(y, base_seed) for y in range(first, last + 1)], ignore_index=True)
