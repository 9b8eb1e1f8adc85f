"""The committed irrigation-need model on held-out simulated years, in the real interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from models.farm.features import CROPS, WINDOW_DAYS, PlotInfo, irrigation_features, threshold_rule_score
from tests.models.farm.conftest import TESTDATA, card_table, decode

SCALE = {"sm_top": 1000.0, "sm_sub": 1000.0, "tmax": 10.0, "tmin": 10.0, "rh": 10.0, "rain": 10.0}
LAT = 21.03  # the weather generator's latitude


def f1(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    tp = float((y & pred).sum())
    p, r = tp / max(pred.sum(), 1), tp / max(y.sum(), 1)
    return p, r, 2 * p * r / max(p + r, 1e-9)


@pytest.fixture(scope="module")
def testset():
    """Features rebuilt on the device side from the committed daily series, labels and rule scores."""
    d = np.load(TESTDATA / "irrigation_test.npz")
    series = {k: decode(d[k], s) for k, s in SCALE.items()}
    xs, ys, rule, plots = [], [], [], []
    offsets = d["offsets"]
    for i, row in enumerate(d["plots"]):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        plot = PlotInfo(float(row[0]), float(row[1]), CROPS[int(row[2])], float(row[3]), LAT)
        irr = d["irrigated"][lo:hi]
        doy = d["doy"][lo:hi].astype(float)
        s = {k: v[lo:hi] for k, v in series.items()}
        for t in range(WINDOW_DAYS - 1, hi - lo - 2):
            w = slice(t - WINDOW_DAYS + 1, t + 1)
            xs.append(irrigation_features(s["sm_top"][w], s["sm_sub"][w], s["tmax"][w], s["tmin"][w], s["rh"][w],
                                          s["rain"][w], doy[w], float(t + 1), plot))
            ys.append(bool(irr[t + 1] or irr[t + 2]))
            rule.append(threshold_rule_score(s["sm_top"][t], plot))
            plots.append(i)
    return {"x": np.stack(xs), "y": np.array(ys), "rule": np.array(rule), "npz": d}


def test_device_features_equal_training_features(testset):
    head = testset["npz"]["features_head"]
    np.testing.assert_allclose(testset["x"][: len(head)], head, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(testset["y"], testset["npz"]["labels"].astype(bool))


def test_int8_model_beats_tuned_threshold_rule_on_held_out_years(registry, testset):
    model = registry.get("irrigation_need")
    assert model.manifest.inputs[0].dtype == "int8"
    probs = np.array([float(next(iter(model.invoke(x[None]).values())).ravel()[0]) for x in testset["x"]])
    y = testset["y"]
    thr = model.manifest.params["threshold"]
    p, r, f_model = f1(y, probs >= thr)
    _, _, f_rule = f1(y, testset["rule"] >= model.manifest.params["rule_threshold"])
    assert f_model > f_rule + 0.1, (f_model, f_rule)
    card = card_table("irrigation_need")
    assert f_model >= card["int8 model"]["f1"]
    assert p >= card["int8 model"]["precision"]
    assert r >= card["int8 model"]["recall"]
    assert f_rule <= card["tuned threshold rule"]["f1"] + 0.005
