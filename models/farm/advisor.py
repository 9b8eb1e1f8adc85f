"""The irrigation advisor: will this plot need water in the next 48 hours?

Once a day it reads the last seven complete local days of the plot's soil-moisture and weather points,
builds the features the model was trained on (:mod:`models.farm.features`), runs the int8 model and
emits the probability and, above the model's decision threshold, an irrigation alert.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

import numpy as np

from kernel.readings import ClockQuality, Priority, Quality, Reading
from models.farm.features import WINDOW_DAYS, PlotInfo, irrigation_features
from models.farm.history import FloatArray, PointKey, SeriesReader, daily, local_midnights
from models.registry import ModelHandle

MIN_TEMPERATURE_READINGS = 6  # per day, for a trustworthy Tmax / Tmin


@dataclass(frozen=True)
class IrrigationPoints:
    """Where the plot's inputs come from: (device, point) of each series."""

    soil_top: PointKey  # volumetric water content 0–20 cm, m³/m³
    soil_sub: PointKey  # 20–50 cm
    temperature: PointKey  # air, °C
    humidity: PointKey  # relative, %
    rain: PointKey  # mm in each reading's interval


@dataclass(frozen=True)
class DailyInputs:
    """Seven days of plot inputs, oldest first, as the feature code takes them."""

    sm_top: FloatArray
    sm_sub: FloatArray
    tmax: FloatArray
    tmin: FloatArray
    rh: FloatArray
    rain: FloatArray
    doy: FloatArray
    days_after_planting: float

    def missing_share(self) -> float:
        """Share of soil-moisture days with no reading."""
        return float(np.isnan(np.concatenate([self.sm_top, self.sm_sub])).mean())


class IrrigationAdvisor:
    """Runs the irrigation-need model for one plot and turns its output into readings."""

    def __init__(
        self,
        name: str,
        model: ModelHandle,
        plot: PlotInfo,
        planting_date: dt.date,
        points: IrrigationPoints,
        timezone: str = "Asia/Ho_Chi_Minh",
        alert_priority: Priority = Priority.EVENT,
    ) -> None:
        self.name = name
        self.model = model
        self.plot = plot
        self.planting_date = planting_date
        self.points = points
        self.timezone = timezone
        self.alert_priority = alert_priority

    def inputs(self, reader: SeriesReader, now: float) -> DailyInputs:
        """The last seven complete local days before ``now``."""
        bounds = local_midnights(now, WINDOW_DAYS, self.timezone)
        lo, hi = bounds[0], bounds[-1]

        def get(key: PointKey, how: str, min_count: int = 1) -> FloatArray:
            ts, vals = reader.series(key[0], key[1], lo, hi)
            return daily(ts, vals, bounds, how, min_count)

        p = self.points
        zone = zoneinfo.ZoneInfo(self.timezone)
        days = [dt.datetime.fromtimestamp(b, zone).date() for b in bounds[:-1]]
        return DailyInputs(
            sm_top=get(p.soil_top, "end"),
            sm_sub=get(p.soil_sub, "end"),
            tmax=get(p.temperature, "max", MIN_TEMPERATURE_READINGS),
            tmin=get(p.temperature, "min", MIN_TEMPERATURE_READINGS),
            rh=get(p.humidity, "mean"),
            rain=get(p.rain, "sum"),
            doy=np.array([d.timetuple().tm_yday for d in days], dtype=np.float64),
            days_after_planting=float((days[-1] - self.planting_date).days + 1),
        )

    def assess(
        self, reader: SeriesReader, now: float, suspect: set[PointKey] | None = None,
        clock: ClockQuality = ClockQuality.SYNCED,
    ) -> list[Reading]:
        """Probability of irrigation within 48 h and the alert flag, as readings."""
        inp = self.inputs(reader, now)
        x = irrigation_features(
            inp.sm_top, inp.sm_sub, inp.tmax, inp.tmin, inp.rh, inp.rain, inp.doy,
            inp.days_after_planting, self.plot,
        )
        model = self.model.current
        prob = float(next(iter(model.invoke(x[None, :]).values())).ravel()[0])
        threshold = float(model.manifest.params.get("threshold", 0.5))
        soil_suspect = bool(suspect and {self.points.soil_top, self.points.soil_sub} & suspect)
        missing = inp.missing_share()
        uncertain = missing > 0 or soil_suspect or not 0 < inp.days_after_planting <= 200
        quality = Quality.UNCERTAIN if uncertain else Quality.GOOD
        if missing == 1.0:
            quality = Quality.BAD
        meta = model.meta() | {"threshold": f"{threshold:.3f}", "missing_days": f"{missing:.2f}"}
        if soil_suspect:
            meta["note"] = "a soil-moisture sensor of this plot is flagged faulty"
        alert = prob >= threshold and quality != Quality.BAD
        alert_meta = dict(meta)
        if alert:
            alert_meta["text"] = f"plot may need irrigation within 48 h (p={prob:.2f} >= {threshold:.2f})"
        return [
            Reading(self.name, "irrigation_need_48h", round(prob, 4), now, "", quality, Priority.TELEMETRY,
                    clock, meta),
            Reading(self.name, "irrigation_alert", alert, now, "", quality,
                    self.alert_priority if alert else Priority.TELEMETRY, clock, alert_meta),
        ]
