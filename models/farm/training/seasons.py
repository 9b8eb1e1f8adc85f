"""AquaCrop season simulation for Bắc Ninh-like plots (development only; needs ``aquacrop``).

Each season is one crop on one soil from a planting date, irrigated by an expert soil-moisture
threshold schedule (AquaCrop irrigation method 1: irrigate when root-zone water falls below SMT % of
total available water). The daily soil water at 0–20 cm and 20–50 cm, the weather and the days the
schedule irrigated are what the datasets are built from.

Crops and soils follow the province's winter (vụ đông, planted late September–October on rice land)
and spring (vụ xuân, February) upland crops: maize, tomato and soybean on alluvial silt loams and silty
clay loams of the Red River / Đuống plain, loams, and the lighter degraded grey soils (sandy loam) of
the north of the province. Rooting depth is capped (a plough pan under paddy); AquaCrop 3.1 ignores
``Soil(z_res=...)``, so the cap is set with ``Crop(Zmax=...)``.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

SOILS: tuple[str, ...] = ("SiltLoam", "SiltClayLoam", "Loam", "SandyLoam", "ClayLoam")
CROP_NAMES = {"maize": "Maize", "tomato": "Tomato", "soybean": "Soybean"}
ZMAX_M = {"maize": 0.6, "tomato": 0.5, "soybean": 0.5}
SEASON_DAYS = 170
# (month, first day, last day) of the planting window
PLANTING = {"winter": (9, 20, 45), "spring": (2, 1, 28)}


@dataclass(frozen=True)
class SeasonSpec:
    """One simulated season."""

    season_id: int
    year: int  # the weather year of planting; the train/validation/test split is by this year
    crop: str
    soil: str
    planting: dt.date
    smt_percent: float
    initial_taw_percent: float


def sample_specs(years: range, per_year: int, seed: int) -> list[SeasonSpec]:
    """Draw ``per_year`` seasons for every weather year with a fixed seed."""
    rng = np.random.default_rng(seed)
    specs: list[SeasonSpec] = []
    for year in years:
        for k in range(per_year):
            season = "winter" if k % 2 == 0 else "spring"
            month, d0, d1 = PLANTING[season]
            planting = dt.date(year, month, 1) + dt.timedelta(days=int(rng.integers(d0, d1 + 1)) - 1)
            specs.append(SeasonSpec(
                season_id=len(specs),
                year=year,
                crop=str(rng.choice(list(CROP_NAMES))),
                soil=str(rng.choice(SOILS)),
                planting=planting,
                smt_percent=float(rng.choice([60.0, 65.0, 70.0, 75.0])),
                initial_taw_percent=float(rng.uniform(40.0, 95.0)),
            ))
    return specs


def soil_limits(soil: str) -> tuple[float, float]:
    """(field capacity, wilting point) of the top layer of an AquaCrop soil, m³/m³."""
    from aquacrop import Soil

    prof = Soil(soil).profile
    return float(prof.th_fc.iloc[0]), float(prof.th_wp.iloc[0])


def simulate(spec: SeasonSpec, weather: pd.DataFrame) -> pd.DataFrame:
    """Run one season; one row per day of the growing season."""
    from aquacrop import AquaCropModel, Crop, InitialWaterContent, IrrigationManagement, Soil

    start = spec.planting
    end = start + dt.timedelta(days=SEASON_DAYS)
    crop = Crop(CROP_NAMES[spec.crop], planting_date=start.strftime("%m/%d"), Zmax=ZMAX_M[spec.crop])
    model = AquaCropModel(
        start.strftime("%Y/%m/%d"),
        end.strftime("%Y/%m/%d"),
        weather[["MinTemp", "MaxTemp", "Precipitation", "ReferenceET", "Date"]],
        Soil(spec.soil),
        crop,
        InitialWaterContent(wc_type="Pct", value=[spec.initial_taw_percent]),
        IrrigationManagement(irrigation_method=1, SMT=[spec.smt_percent] * 4, MaxIrr=25.0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.run_model(till_termination=True)
    store = model.get_water_storage()
    flux = model.get_water_flux()
    keep = store["growing_season"].to_numpy() > 0
    n = int(keep.sum())
    dates = pd.date_range(start, periods=n, freq="D")
    th = store.loc[keep, [f"th{i}" for i in range(1, 6)]].to_numpy()
    w = weather.set_index("Date").loc[dates]
    fc, wp = soil_limits(spec.soil)
    return pd.DataFrame({
        "season_id": spec.season_id,
        "year": spec.year,
        "crop": spec.crop,
        "soil": spec.soil,
        "fc": fc,
        "wp": wp,
        "smt": spec.smt_percent,
        "date": dates,
        "dap": np.arange(1, n + 1),
        "sm_top": th[:, :2].mean(axis=1),
        "sm_sub": th[:, 2:5].mean(axis=1),
        "irrigation": flux["IrrDay"].to_numpy()[keep],
        "tmax": w["MaxTemp"].to_numpy(),
        "tmin": w["MinTemp"].to_numpy(),
        "rh": w["RH"].to_numpy(),
        "rain": w["Precipitation"].to_numpy(),
        "et0_pm": w["ReferenceET"].to_numpy(),
    })
