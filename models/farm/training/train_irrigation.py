"""Train the irrigation-need model (development only; needs the ``train`` extra).

    /work/venv-tf/bin/python -m models.farm.training.train_irrigation

Reads the simulated seasons (simulating them first if needed), trains a small MLP on the training
years, picks the decision threshold and tunes the baseline rule on the validation years, converts to
int8 .tflite, evaluates both on the test years and writes ``models/files/irrigation_need.tflite``,
its manifest, its figures (``build/farm/irrigation_results.json``) and the committed test set
``models/farm/testdata/irrigation_test.npz``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from models.farm.features import CROPS, N_IRRIGATION_FEATURES
from models.farm.training import config
from models.farm.training.common import (
    best_threshold,
    binary_metrics,
    deterministic_tf,
    run_tflite,
    sha256_bytes,
    to_int8_tflite,
    write_json,
)
from models.farm.training.dataset import irrigation_dataset, observed, simulate_all
from models.farm.training.manifests import write_manifest

NAME = "irrigation_need"
VERSION = "1.0.0"
FEATURE_CHECK = 500
SCALE = {"sm_top": 1000.0, "sm_sub": 1000.0, "tmax": 10.0, "tmin": 10.0, "rh": 10.0, "rain": 10.0}


def export_testset(seasons, data) -> None:  # type: ignore[no-untyped-def]
    """The held-out seasons' observed daily series (what the device would read) and training features.

    ``plots`` rows: field capacity, wilting point, crop index, SMT %, season id, planting date ordinal.
    """
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("sm_top", "sm_sub", "tmax", "tmin", "rh", "rain")}
    doy, irr, offsets, plots = [], [], [0], []
    for sid, season in seasons.groupby("season_id", sort=True):
        if config.split_of(int(season.iloc[0].year)) != "test":
            continue
        rng = np.random.default_rng(config.SEED + 1000 * int(sid))
        obs = observed(season, rng)
        for k in cols:
            cols[k].append(obs[k].astype(np.float64))
        doy.append(season["date"].dt.day_of_year.to_numpy().astype(np.int16))
        irr.append(season["irrigation"].to_numpy() > 0)
        offsets.append(offsets[-1] + len(season))
        f = season.iloc[0]
        plots.append([float(f.fc), float(f.wp), float(CROPS.index(str(f.crop))), float(f.smt), float(sid),
                      float(f.date.toordinal())])
    test = np.isin(data["year"], list(config.TEST_YEARS))
    config.TESTSET_DIR.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {k: encode(np.concatenate(v), SCALE[k]) for k, v in cols.items()}
    np.savez_compressed(
        config.TESTSET_DIR / "irrigation_test.npz",
        **arrays,
        doy=np.concatenate(doy), irrigated=np.concatenate(irr), offsets=np.array(offsets, dtype=np.int32),
        plots=np.array(plots, dtype=np.float64),
        features_head=data["x"][test][:FEATURE_CHECK], labels=data["y"][test], season=data["season"][test],
    )


def encode(values: np.ndarray, scale: float) -> np.ndarray:
    """Daily values as int16 at the sensors' resolution; NaN becomes -32768."""
    q = np.clip(np.round(np.nan_to_num(values, nan=0.0) * scale), -32767, 32767)
    return np.where(np.isnan(values), -32768, q).astype(np.int16)

def main() -> None:
    """Train, convert, evaluate, write."""
    t0 = time.perf_counter()
    seasons = simulate_all()
    data = irrigation_dataset(seasons)
    split = np.array([config.split_of(int(y)) for y in data["year"]])
    x, y = data["x"], data["y"].astype(np.float32)
    tr, va, te = split == "train", split == "validation", split == "test"
    print(f"rows: train {tr.sum()} validation {va.sum()} test {te.sum()}; positives {y.mean():.3f}")

    tf = deterministic_tf(config.SEED)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(N_IRRIGATION_FEATURES,)),
        tf.keras.layers.Dense(32, activation="relu"),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="binary_crossentropy",
                  metrics=[tf.keras.metrics.AUC(name="auc")])
    stop = tf.keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=6, restore_best_weights=True)
    model.fit(x[tr], y[tr], validation_data=(x[va], y[va]), epochs=60, batch_size=256, verbose=0,
              callbacks=[stop], shuffle=True)

    rep = x[tr][np.random.default_rng(config.SEED).choice(int(tr.sum()), 1000, replace=False)]
    tflite = to_int8_tflite(tf, model, rep)
    val_score = run_tflite(tflite, x[va])[:, 0]
    thr = best_threshold(y[va], val_score)
    rule_thr = best_threshold(y[va], data["rule"][va])
    test_score = run_tflite(tflite, x[te])[:, 0]
    keras_test = model.predict(x[te], verbose=0)[:, 0]
    results = {
        "rows": {"train": int(tr.sum()), "validation": int(va.sum()), "test": int(te.sum())},
        "positive_share": float(y.mean()),
        "threshold": thr,
        "rule_threshold": rule_thr,
        "test": {
            "int8": binary_metrics(y[te], test_score >= thr),
            "keras_fp32": binary_metrics(y[te], keras_test >= thr),
            "rule": binary_metrics(y[te], data["rule"][te] >= rule_thr),
        },
        "params": int(model.count_params()),
        "size_bytes": len(tflite),
        "sha256": sha256_bytes(tflite),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    config.FILES_DIR.mkdir(parents=True, exist_ok=True)
    (config.FILES_DIR / f"{NAME}.tflite").write_bytes(tflite)
    write_json(config.WORK_DIR / "irrigation_results.json", results)
    write_manifest(NAME, VERSION, tflite, kind="irrigation", extra={"threshold": thr, "rule_threshold": rule_thr})
    export_testset(seasons, data)
    print(results)


if __name__ == "__main__":
    main()
