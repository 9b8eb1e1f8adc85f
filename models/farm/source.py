"""Device kind ``farm``: the irrigation advisor and the sensor-fault monitor on a schedule.

A ``farm`` device names a plot's soil-moisture and weather points (readings of other devices, e.g. a
Modbus soil probe and a weather station) and runs the farm models over their recent history::

    - driver: farm
      name: plot-lim-1
      weather:
        temperature: {device: ws1, point: air_temp}
        humidity: {device: ws1, point: rh}
        rain: {device: ws1, point: rain_total, cumulative: true}   # or mm per reading interval
      irrigation:
        soil_top: {device: soil1, point: moisture, scale: 0.01}   # the probe reports % VWC
        soil_sub: {device: soil2, point: moisture, scale: 0.01}
        field_capacity: 0.33
        wilting_point: 0.13
        crop: maize
        planting_date: 2026-10-01
      faults:
        sensors:
          - {device: soil1, point: moisture, scale: 0.01, kind: soil_moisture}
          - {device: ws1, point: air_temp, kind: temperature}

History comes from a :class:`HistoryTee` put in front of the site's sink when the sources are built,
so it starts empty at boot: the advisor's first trustworthy answer comes after seven full days (until
then its readings are UNCERTAIN or BAD), the fault monitor's after 72 hours.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kernel.config_base import RelPath, StrictModel
from kernel.readings import Priority, Reading
from kernel.source import RunContext, Source
from models.farm.advisor import IrrigationAdvisor, IrrigationPoints
from models.farm.features import CROPS, PlotInfo
from models.farm.history import HistoryTee, PointKey, ReadingHistory, ScaledSeries
from models.farm.monitor import SensorFaultMonitor, WatchedSensor
from models.registry import ModelRegistry

MODEL_DIR = Path(__file__).resolve().parents[1] / "files"
IRRIGATION_MODEL = "irrigation_need"
FAULT_MODEL = "sensor_fault"


class PointRef(StrictModel):
    """A point of another device."""

    device: str = Field(min_length=1)
    point: str = Field(min_length=1)
    scale: float = Field(
        default=1.0, gt=0, description="Multiplier into the models' units, e.g. 0.01 for soil moisture in %."
    )

    @property
    def key(self) -> PointKey:
        """(device, point)."""
        return (self.device, self.point)


class SensorRef(PointRef):
    """A point watched for faults, and what it measures."""

    kind: Literal["soil_moisture", "temperature", "humidity", "rain"]


class RainRef(PointRef):
    """The rain gauge: mm per reading interval, or a running total with ``cumulative: true``."""

    cumulative: bool = False


class WeatherPoints(StrictModel):
    """The plot's weather station points."""

    temperature: PointRef
    humidity: PointRef
    rain: RainRef


class IrrigationSettings(StrictModel):
    """The plot: soil probes, soil water limits (m³/m³), crop and the agronomist's threshold."""

    soil_top: PointRef = Field(description="Volumetric water content at 0–20 cm (m³/m³).")
    soil_sub: PointRef = Field(description="Volumetric water content at 20–50 cm (m³/m³).")
    field_capacity: float = Field(gt=0.05, lt=0.7)
    wilting_point: float = Field(gt=0.0, lt=0.5)
    crop: Literal["maize", "tomato", "soybean"]
    planting_date: dt.date
    smt_percent: float = Field(default=70.0, ge=40, le=95)
    period_s: float = Field(default=86400.0, ge=1.0, le=7 * 86400)
    alert_priority: Literal["event", "alarm"] = "event"

    @model_validator(mode="after")
    def _limits(self) -> IrrigationSettings:
        if self.wilting_point >= self.field_capacity:
            raise ValueError(
                f"wilting_point ({self.wilting_point}) must be below field_capacity ({self.field_capacity})"
            )
        return self


class FaultSettings(StrictModel):
    """Which sensors the fault monitor watches and how often."""

    sensors: list[SensorRef] = Field(min_length=1)
    period_s: float = Field(default=3600.0, ge=1.0, le=86400)
    min_confidence: float = Field(default=0.6, ge=0.2, le=1.0)
    drift_confidence: float = Field(
        default=0.9, ge=0.2, le=1.0, description="Stricter: a 72 h ramp is often the weather, not the sensor."
    )


class Config(StrictModel):
    """One plot (or one farm station) running the farm models."""

    driver: Literal["farm"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    enabled: bool = True
    weather: WeatherPoints
    irrigation: IrrigationSettings | None = None
    faults: FaultSettings | None = None
    model_dir: RelPath | None = Field(
        default=None, description="Folder of the models and manifests; default: the models shipped with the agent."
    )
    threads: int = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _something(self) -> Config:
        if self.irrigation is None and self.faults is None:
            raise ValueError("a farm device needs an irrigation section, a faults section or both")
        _scales(self)
        return self


def _refs(cfg: Config) -> list[PointRef]:
    refs: list[PointRef] = [cfg.weather.temperature, cfg.weather.humidity, cfg.weather.rain]
    if cfg.irrigation is not None:
        refs += [cfg.irrigation.soil_top, cfg.irrigation.soil_sub]
    if cfg.faults is not None:
        refs += list(cfg.faults.sensors)
    return refs


def _scales(cfg: Config) -> dict[PointKey, float]:
    """Each point's scale; the same point given two different scales is a config error."""
    scales: dict[PointKey, float] = {}
    for ref in _refs(cfg):
        if scales.setdefault(ref.key, ref.scale) != ref.scale:
            raise ValueError(f"point {ref.device}/{ref.point} is given two different scales")
    return scales


class FarmSource:
    """Runs the fault monitor and the irrigation advisor of one farm device on their periods."""

    def __init__(self, cfg: Config, history: ReadingHistory, timezone: str, latitude: float) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.history = history
        cumulative = {cfg.weather.rain.key} if cfg.weather.rain.cumulative else set()
        self.reader = ScaledSeries(history, _scales(cfg), cumulative)
        self.timezone = timezone
        self.latitude = latitude
        self.advisor: IrrigationAdvisor | None = None
        self.monitor: SensorFaultMonitor | None = None
        self.registry: ModelRegistry | None = None

    def load(self) -> None:
        """Load the models (hash and tensors checked by the registry) and build advisor and monitor."""
        registry = self.registry = ModelRegistry(self.cfg.model_dir or MODEL_DIR, num_threads=self.cfg.threads)
        w = self.cfg.weather
        if self.cfg.faults is not None:
            sensors = [WatchedSensor(s.device, s.point, s.kind) for s in self.cfg.faults.sensors]
            self.monitor = SensorFaultMonitor(
                self.name, registry.handle(FAULT_MODEL), sensors, w.rain.key, self.cfg.faults.min_confidence,
                self.cfg.faults.drift_confidence,
            )
        irr = self.cfg.irrigation
        if irr is not None:
            plot = PlotInfo(irr.field_capacity, irr.wilting_point, irr.crop, irr.smt_percent, self.latitude)
            assert plot.crop in CROPS
            points = IrrigationPoints(irr.soil_top.key, irr.soil_sub.key, w.temperature.key, w.humidity.key,
                                      w.rain.key)
            priority = Priority.ALARM if irr.alert_priority == "alarm" else Priority.EVENT
            self.advisor = IrrigationAdvisor(self.name, registry.handle(IRRIGATION_MODEL), plot, irr.planting_date,
                                             points, self.timezone, priority)

    def tick(self, ctx: RunContext, run_faults: bool, run_irrigation: bool) -> list[Reading]:
        """One scheduled run: faults first, so the advisor knows which soil sensors are suspect.

        A model whose files changed on disk is reloaded first; a refused replacement is logged and the
        model in service keeps running.
        """
        if self.registry is None:
            self.load()
        assert self.registry is not None
        for result in self.registry.refresh():
            if result.error:
                ctx.log.error("%s: replacement model refused, previous one kept: %s", self.name, result.error)
            else:
                ctx.log.info("%s: model %s %s now in service", self.name, result.name, result.version)
        now, clock = ctx.clock.now(), ctx.clock.quality()
        out: list[Reading] = []
        if run_faults and self.monitor is not None:
            out += self.monitor.check(self.reader, now, clock)
        if run_irrigation and self.advisor is not None:
            suspect = self.monitor.suspect if self.monitor is not None else set()
            out += self.advisor.assess(self.reader, now, suspect, clock)
        return out

    async def run(self, ctx: RunContext) -> None:
        """Tick on each section's period until cancelled; the first runs come one period after start."""
        if self.registry is None:
            self.load()
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_f = start + self.cfg.faults.period_s if self.cfg.faults else float("inf")
        next_i = start + self.cfg.irrigation.period_s if self.cfg.irrigation else float("inf")
        while True:
            await asyncio.sleep(max(0.0, min(next_f, next_i) - loop.time()))
            t = loop.time()
            run_f, run_i = t >= next_f, t >= next_i
            readings = self.tick(ctx, run_f, run_i)
            if readings:
                await ctx.sink.put(readings)
            if run_f and self.cfg.faults:
                next_f += self.cfg.faults.period_s
            if run_i and self.cfg.irrigation:
                next_i += self.cfg.irrigation.period_s


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One source per farm device; all share one history, fed by a tee in front of the site's sink."""
    if isinstance(ctx.sink, HistoryTee):
        history = ctx.sink.history
    else:
        history = ReadingHistory()
        ctx.sink = HistoryTee(ctx.sink, history)
    sources: list[Source] = []
    for cfg in configs:
        if not cfg.enabled:
            continue
        for key in _scales(cfg):
            history.watch(*key)
        sources.append(FarmSource(cfg, history, ctx.site.site.timezone, ctx.site.site.location.lat))
    return sources
