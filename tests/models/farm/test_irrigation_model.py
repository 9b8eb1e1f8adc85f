"""The committed irrigation-need model on held-out simulated years, in the real interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from models.farm.evaluation import binary_scores, irrigation_testset, predict
from tests.models.farm.conftest import card_table


@pytest.fixture(scope="module")
def testset():
    """Features rebuilt on the device side from the committed daily series."""
    return irrigation_testset()


@pytest.fixture(scope="module")
def probs(registry, testset):
    """The committed int8 model's probability for every held-out plot-day."""
    return predict(registry.get("irrigation_need"), testset.x)[:, 0]


def test_device_features_equal_training_features(testset):
    head = testset.raw["features_head"]
    np.testing.assert_allclose(testset.x[: len(head)], head, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(testset.y, testset.raw["labels"].astype(bool))


def test_int8_model_beats_tuned_threshold_rule_on_held_out_years(registry, testset, probs):
    model = registry.get("irrigation_need")
    assert model.manifest.inputs[0].dtype == "int8"
    got = binary_scores(testset.y, probs >= model.manifest.params["threshold"])
    rule = binary_scores(testset.y, testset.rule >= model.manifest.params["rule_threshold"])
    assert got["f1"] > rule["f1"] + 0.1, (got, rule)
    card = card_table("irrigation_need")
    for metric in ("precision", "recall", "f1"):
        assert got[metric] >= card["int8 model"][metric], metric
    assert rule["f1"] <= card["tuned threshold rule"]["f1"] + 0.005


def test_event_level_model_warns_earlier_and_cries_wolf_less_than_the_rule(registry, testset, probs):
    from models.farm.evaluation import irrigation_events

    model = registry.get("irrigation_need")
    got = irrigation_events(testset, probs >= model.manifest.params["threshold"])
    rule = irrigation_events(testset, testset.rule >= model.manifest.params["rule_threshold"])
    assert got["events_warned"] >= 0.8
    assert got["events_warned"] > rule["events_warned"]
    assert got["alerts_followed"] > rule["alerts_followed"]
    assert got["false_alerts_per_100_days"] < rule["false_alerts_per_100_days"]
