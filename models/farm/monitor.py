"""The sensor-fault monitor: is a soil-moisture, temperature, humidity or rain sensor stuck, spiking,
drifting or dropping out?

Every run it takes the last 72 hourly values of each watched sensor (hourly means; rain as hourly
sums), builds the fault features, runs the int8 detector and reports the class per sensor. A new
fault is an ALARM, its end an EVENT, anything else TELEMETRY.

A fault is reported only above a confidence: ``min_confidence`` for most classes and the stricter
``drift_confidence`` for drift, because a 72-hour ramp in temperature or humidity is often just the
weather (see the model card for the false-alarm figures behind the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel.readings import ClockQuality, Priority, Quality, Reading
from models.farm.features import FAULT_CLASSES, FAULT_WINDOW_H, SENSOR_KINDS, fault_features
from models.farm.history import PointKey, SeriesReader, hourly
from models.registry import ModelHandle


@dataclass(frozen=True)
class WatchedSensor:
    """One sensor series and what it measures (one of ``SENSOR_KINDS``)."""

    device: str
    point: str
    kind: str

    @property
    def key(self) -> PointKey:
        """(device, point)."""
        return (self.device, self.point)


class SensorFaultMonitor:
    """Runs the fault detector over every watched sensor and tracks which ones are faulty."""

    def __init__(
        self,
        name: str,
        model: ModelHandle,
        sensors: list[WatchedSensor],
        rain: PointKey | None = None,
        min_confidence: float = 0.6,
        drift_confidence: float = 0.9,
    ) -> None:
        for s in sensors:
            if s.kind not in SENSOR_KINDS:
                raise ValueError(f"sensor {s.device}/{s.point}: unknown kind {s.kind!r}")
        self.name = name
        self.model = model
        self.sensors = sensors
        self.rain = rain
        self.min_confidence = min_confidence
        self.drift_confidence = drift_confidence
        self.state: dict[PointKey, str] = {}

    @property
    def suspect(self) -> set[PointKey]:
        """Sensors whose last verdict was a fault."""
        return {k for k, v in self.state.items() if v != "normal"}

    def window(self, reader: SeriesReader, key: PointKey, end: float, how: str) -> np.ndarray:
        """The last 72 hourly values of one point ending at ``end``."""
        ts, vals = reader.series(key[0], key[1], end - FAULT_WINDOW_H * 3600.0, end)
        return hourly(ts, vals, end, FAULT_WINDOW_H, how)

    def classify(self, values: np.ndarray, kind: str, rain: np.ndarray | None) -> tuple[str, float]:
        """(class name, probability) for one 72-hour window."""
        x = fault_features(values, kind, rain)
        probs = next(iter(self.model.current.invoke(x[None]).values())).ravel()
        best = int(np.argmax(probs))
        label = FAULT_CLASSES[best]
        needed = self.drift_confidence if label == "drift" else self.min_confidence
        if label != "normal" and float(probs[best]) < needed:
            return "normal", float(probs[0])
        return label, float(probs[best])

    def check(self, reader: SeriesReader, now: float, clock: ClockQuality = ClockQuality.SYNCED) -> list[Reading]:
        """One verdict per sensor over the 72 whole hours before ``now``."""
        end = float(np.floor(now / 3600.0) * 3600.0)
        rain = self.window(reader, self.rain, end, "sum") if self.rain is not None else None
        model = self.model.current
        out = []
        for s in self.sensors:
            values = self.window(reader, s.key, end, "sum" if s.kind == "rain" else "mean")
            label, conf = self.classify(values, s.kind, None if s.kind == "rain" else rain)
            before = self.state.get(s.key, "normal")
            self.state[s.key] = label
            if label != "normal" and before != label:
                priority = Priority.ALARM
            elif label == "normal" and before != "normal":
                priority = Priority.EVENT
            else:
                priority = Priority.TELEMETRY
            meta = model.meta() | {"sensor": f"{s.device}/{s.point}", "kind": s.kind, "confidence": f"{conf:.2f}"}
            if priority == Priority.ALARM:
                meta["text"] = f"sensor {s.device}/{s.point} looks {label} (p={conf:.2f})"
            elif priority == Priority.EVENT:
                meta["text"] = f"sensor {s.device}/{s.point} looks normal again (was {before})"
            out.append(Reading(self.name, f"fault.{s.device}.{s.point}", label, now, "", Quality.GOOD, priority,
                               clock, meta))
        return out
