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


def test_device_features_equal_training_features(testset):
    head = testset.raw["features_head"]
    np.testing.assert_allclose(testset.x[: len(head)], head, rtol=0, atol=1e-6)


def test_precision_and_recall_per_fault_kind_meet_the_model_card(registry, testset):
    model = registry.get("sensor_fault")
    assert model.manifest.labels == list(FAULT_CLASSES)
    assert model.manifest.inputs[0].dtype == "int8"
    pred = predict(model, testset.x).argmax(axis=1)
    got = per_class_scores(testset.y, pred)
    card = card_table("sensor_fault")
    for name in FAULT_CLASSES:
        assert got[name]["precision"] >= card[f"model: {name}"]["precision"], (name, got[name])
        assert got[name]["recall"] >= card[f"model: {name}"]["recall"], (name, got[name])
    # every kind is in the test set in fair numbers
    assert min(int((testset.y == c).sum()) for c in range(len(FAULT_CLASSES))) >= 300


def test_model_beats_the_rules_on_drift(testset, registry):
    pred = predict(registry.get("sensor_fault"), testset.x).argmax(axis=1)
    drift = FAULT_CLASSES.index("drift")
    rules = per_class_scores(testset.y, testset.rule)
    got = per_class_scores(testset.y, pred)
    assert rules["drift"]["recall"] == 0.0  # the rules have no drift check
    assert got["drift"]["recall"] >= 0.7
    assert (pred[testset.y == drift] != 0).mean() >= 0.7  # drifting sensors are at least flagged faulty
