"""The committed held-out test sets of the farm models, and their scoring (numpy only, no TensorFlow).

``models/farm/testdata/irrigation_test.npz`` holds the daily sensor series of the test-year seasons;
``fault_test.npz`` holds 72-hour windows of readings. Both store readings as int16 at the sensors'
resolution (-32768 = missing), so the features rebuilt here are exactly the ones used in training.
The tests and ``bench/bench_farm_models.py`` use these helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.farm.features import (
    CROPS,
    FAULT_CLASSES,
    SENSOR_KINDS,
    WINDOW_DAYS,
    PlotInfo,
    fault_features,
    fault_rule,
    irrigation_features,
    threshold_rule_score,
)

TESTDATA = Path(__file__).resolve().parent / "testdata"
DAILY_SCALE = {"sm_top": 1000.0, "sm_sub": 1000.0, "tmax": 10.0, "tmin": 10.0, "rh": 10.0, "rain": 10.0}
HOURLY_SCALE = {"soil_moisture": 1000.0, "temperature": 10.0, "humidity": 10.0, "rain": 10.0}
MISSING = -32768
LATITUDE = 21.03  # the weather generator's


def load_npz(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every array of an .npz file, read once (an open NpzFile inflates an array on every access)."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def decode(q: npt.NDArray[Any], scale: float) -> npt.NDArray[np.float64]:
    """int16 readings back to float; -32768 becomes NaN."""
    return np.where(q == MISSING, np.nan, np.round(q.astype(np.float64) / scale, 4))


@dataclass
class TestSet:
    """Features rebuilt from the committed readings, labels, the baseline rule's output, extras."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[Any]
    rule: npt.NDArray[Any]
    raw: dict[str, npt.NDArray[Any]]


def irrigation_testset(path: Path = TESTDATA / "irrigation_test.npz") -> TestSet:
    """Every plot-day of the test-year seasons: features, label (irrigated on t+1 or t+2), rule score."""
    d = load_npz(path)
    series = {k: decode(d[k], s) for k, s in DAILY_SCALE.items()}
    xs, ys, rule = [], [], []
    offsets = d["offsets"]
    for i, row in enumerate(d["plots"]):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        plot = PlotInfo(float(row[0]), float(row[1]), CROPS[int(row[2])], float(row[3]), LATITUDE)
        irr = d["irrigated"][lo:hi]
        doy = d["doy"][lo:hi].astype(np.float64)
        s = {k: v[lo:hi] for k, v in series.items()}
        for t in range(WINDOW_DAYS - 1, hi - lo - 2):
            w = slice(t - WINDOW_DAYS + 1, t + 1)
            xs.append(irrigation_features(s["sm_top"][w], s["sm_sub"][w], s["tmax"][w], s["tmin"][w],
                                          s["rh"][w], s["rain"][w], doy[w], float(t + 1), plot))
            ys.append(bool(irr[t + 1] or irr[t + 2]))
            rule.append(threshold_rule_score(s["sm_top"][t], plot))
    return TestSet(np.stack(xs), np.array(ys), np.array(rule), d)


def fault_testset(path: Path = TESTDATA / "fault_test.npz") -> TestSet:
    """Every committed 72-hour window: features, fault class, and the baseline rules' class."""
    d = load_npz(path)
    xs, rule = [], []
    rain_all = decode(d["rain"], HOURLY_SCALE["rain"])
    kinds, readings, has_rain = d["kind"], d["readings"], d["has_rain"]
    for i in range(len(d["label"])):
        kind = SENSOR_KINDS[int(kinds[i])]
        values = decode(readings[i], HOURLY_SCALE[kind])
        xs.append(fault_features(values, kind, rain_all[i] if has_rain[i] else None))
        rule.append(fault_rule(values, kind))
    return TestSet(np.stack(xs), d["label"].astype(np.int64), np.array(rule), d)


def binary_scores(y: npt.NDArray[Any], pred: npt.NDArray[Any]) -> dict[str, float]:
    """Precision, recall, F1."""
    y, pred = np.asarray(y, dtype=bool), np.asarray(pred, dtype=bool)
    tp = float((y & pred).sum())
    p, r = tp / max(float(pred.sum()), 1.0), tp / max(float(y.sum()), 1.0)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-9)}


def per_class_scores(y: npt.NDArray[Any], pred: npt.NDArray[Any]) -> dict[str, dict[str, float]]:
    """Precision and recall of every fault class."""
    return {
        name: {
            "precision": float(((pred == c) & (y == c)).sum()) / max(float((pred == c).sum()), 1.0),
            "recall": float(((pred == c) & (y == c)).sum()) / max(float((y == c).sum()), 1.0),
        }
        for c, name in enumerate(FAULT_CLASSES)
    }


def predict(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Run a loaded model (``models.registry.LoadedModel``) one sample at a time, as the device does."""
    return np.stack([next(iter(model.invoke(row[None]).values())).ravel() for row in x])


def irrigation_events(testset: TestSet, alerts: npt.NDArray[Any]) -> dict[str, float]:
    """Event-level view of daily alerts over the test seasons.

    ``events_warned``: share of irrigation days (from day 9 of a season on) with an alert 1–3 days
    before; ``alerts_followed``: share of alerts followed by irrigation within 3 days;
    ``false_alerts_per_100_days``: alerts not followed by irrigation, per 100 plot-days.
    """
    d = testset.raw
    offsets = d["offsets"]
    warned = events = followed = false = days = 0
    row = 0
    for i in range(len(offsets) - 1):
        irr = d["irrigated"][int(offsets[i]): int(offsets[i + 1])]
        n_rows = len(irr) - 2 - (WINDOW_DAYS - 1)
        a = np.zeros(len(irr), dtype=bool)
        a[WINDOW_DAYS - 1: len(irr) - 2] = alerts[row: row + n_rows]
        row += n_rows
        for e in np.flatnonzero(irr):
            if e >= WINDOW_DAYS + 2:
                events += 1
                warned += int(a[e - 3: e].any())
        for t in np.flatnonzero(a):
            hit = bool(irr[t + 1: t + 4].any())
            followed += int(hit)
            false += int(not hit)
        days += n_rows
    n_alerts = followed + false
    return {
        "events_warned": warned / max(events, 1),
        "alerts_followed": followed / max(n_alerts, 1),
        "false_alerts_per_100_days": 100.0 * false / max(days, 1),
    }
