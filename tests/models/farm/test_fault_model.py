"""The committed sensor-fault detector on held-out simulated years, in the real interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from models.farm.evaluation import fault_testset, per_class_scores, predict
from models.farm.features import FAULT_CLASSES
from tests.models.farm.conftest import card_table


@pytest.fixture(scope="module")
def testset():
    """Features rebuilt on the device side from the committed hourly readings."""
    return fault_testset()


@pytest.fixture(scope="module")
def probs(registry, testset):
    """The committed int8 model's class probabilities for every test window."""
    return predict(registry.get("sensor_fault"), testset.x)


def test_device_features_equal_training_features(testset):
    head = testset.raw["features_head"]
    np.testing.assert_allclose(testset.x[: len(head)], head, rtol=0, atol=1e-6)


def test_precision_and_recall_per_fault_kind_meet_the_model_card(registry, testset, probs):
    model = registry.get("sensor_fault")
    assert model.manifest.labels == list(FAULT_CLASSES)
    assert model.manifest.inputs[0].dtype == "int8"
    pred = probs.argmax(axis=1)
    got = per_class_scores(testset.y, pred)
    card = card_table("sensor_fault")
    for name in FAULT_CLASSES:
        assert got[name]["precision"] >= card[f"model: {name}"]["precision"], (name, got[name])
        assert got[name]["recall"] >= card[f"model: {name}"]["recall"], (name, got[name])
    # every kind is in the test set in fair numbers
    assert min(int((testset.y == c).sum()) for c in range(len(FAULT_CLASSES))) >= 300


def test_model_beats_the_rules_on_drift(testset, probs):
    pred = probs.argmax(axis=1)
    drift = FAULT_CLASSES.index("drift")
    rules = per_class_scores(testset.y, testset.rule)
    got = per_class_scores(testset.y, pred)
    assert rules["drift"]["recall"] == 0.0  # the rules have no drift check
    assert got["drift"]["recall"] >= 0.55
    assert got["drift"]["precision"] >= 0.7
    assert (pred[testset.y == drift] != 0).mean() >= 0.6  # drifting sensors are at least flagged faulty


def plausible_normal(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Healthy sensor signals made differently from the training data: sine days, random-walk weather."""
    h = np.arange(72)
    phase = rng.uniform(0, 2 * np.pi)
    walk = np.cumsum(rng.normal(0, 0.12, 72))
    if kind == "temperature":
        x = rng.uniform(15, 32) + rng.uniform(2, 6) * np.sin(2 * np.pi * h / 24 + phase) + walk
        return np.round(x + rng.normal(0, 0.2, 72), 1)
    if kind == "humidity":
        x = rng.uniform(65, 85) + rng.uniform(5, 12) * np.sin(2 * np.pi * h / 24 + phase) + 4 * walk
        return np.round(np.clip(x + rng.normal(0, 0.8, 72), 20, 100), 1)
    x = rng.uniform(0.18, 0.38) - rng.uniform(0.0, 0.012) * h / 24 + 0.0015 * np.sin(2 * np.pi * h / 24 + phase)
    return np.round(x + rng.normal(0, 0.0015, 72), 3)


@pytest.mark.parametrize("kind", ["temperature", "humidity", "soil_moisture"])
def test_few_false_alarms_on_healthy_signals_unlike_the_training_data(registry, kind):
    """The monitor's default confidence rule on 300 healthy windows made another way than training's."""
    from models.farm.monitor import SensorFaultMonitor

    mon = SensorFaultMonitor("t", registry.handle("sensor_fault"), [])
    rng = np.random.default_rng(11)
    flagged = [mon.classify(plausible_normal(kind, rng), kind, None)[0] for _ in range(300)]
    alarms = sum(label != "normal" for label in flagged)
    assert alarms / 300 <= 0.05, f"{kind}: {alarms} of 300 healthy windows flagged"


def test_monitor_confidence_rule_keeps_precision_high(registry, testset, probs):
    """With the monitor's defaults, what it reports as a fault is almost always that fault."""
    from models.farm.monitor import SensorFaultMonitor

    mon = SensorFaultMonitor("t", registry.handle("sensor_fault"), [])
    pred = probs.argmax(axis=1)
    needed = np.where(pred == FAULT_CLASSES.index("drift"), mon.drift_confidence, mon.min_confidence)
    pred[(pred != 0) & (probs.max(axis=1) < needed)] = 0
    got = per_class_scores(testset.y, pred)
    card = card_table("sensor_fault")
    for name in FAULT_CLASSES[1:]:
        assert got[name]["precision"] >= card[f"monitor: {name}"]["precision"], (name, got[name])
        assert got[name]["recall"] >= card[f"monitor: {name}"]["recall"], (name, got[name])
