"""Train the sensor-fault detector (development only; needs the ``train`` extra).

    /work/venv-tf/bin/python -m models.farm.training.train_faults

Builds 72-hour windows of hourly soil-moisture, temperature, humidity and rain streams from the
simulated seasons, injects one fault into half of them, trains a small 1D-CNN on the training years,
converts it to int8 .tflite and evaluates it and the baseline rules on a fixed sample of test-year
windows, which is committed as ``models/farm/testdata/fault_test.npz`` (readings as int16 at the
sensors' resolution).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from models.farm.features import FAULT_CLASSES, FAULT_WINDOW_H, N_FAULT_CHANNELS, SENSOR_KINDS
from models.farm.training import config
from models.farm.training.common import deterministic_tf, run_tflite, sha256_bytes, to_int8_tflite, write_json
from models.farm.training.dataset import fault_dataset, simulate_all
from models.farm.training.manifests import write_manifest

NAME = "sensor_fault"
VERSION = "1.1.0"
FEATURE_CHECK = 100
EPOCHS = 14
SCALE = {"soil_moisture": 1000.0, "temperature": 10.0, "humidity": 10.0, "rain": 10.0}
MISSING = np.int16(-32768)


def encode(raw: npt.NDArray[Any], kinds: npt.NDArray[Any]) -> npt.NDArray[np.int16]:
    """Readings as int16 at each sensor's resolution; NaN becomes -32768."""
    scale = np.array([SCALE[SENSOR_KINDS[k]] for k in kinds])[:, None]
    q = np.round(np.nan_to_num(raw.astype(np.float64), nan=0.0) * scale)
    return np.where(np.isnan(raw), MISSING, np.clip(q, -32767, 32767)).astype(np.int16)


def per_class(y: npt.NDArray[np.generic], pred: npt.NDArray[np.generic]) -> dict[str, dict[str, float]]:
    """Precision and recall of every class."""
    out = {}
    for c, name in enumerate(FAULT_CLASSES):
        tp = float(((pred == c) & (y == c)).sum())
        out[name] = {"precision": tp / max(float((pred == c).sum()), 1.0),
                     "recall": tp / max(float((y == c).sum()), 1.0), "support": int((y == c).sum())}
    return out


def build_model(tf):  # type: ignore[no-untyped-def]
    """Conv1D 16-16 / pool / 24, global max+mean pooling, dense 24, softmax over five classes."""
    inp = tf.keras.Input(shape=(FAULT_WINDOW_H, N_FAULT_CHANNELS))
    h = tf.keras.layers.Conv1D(16, 5, padding="same", activation="relu")(inp)
    h = tf.keras.layers.Conv1D(16, 5, padding="same", activation="relu")(h)
    h = tf.keras.layers.MaxPooling1D(2)(h)
    h = tf.keras.layers.Conv1D(24, 5, padding="same", activation="relu")(h)
    h = tf.keras.layers.Concatenate()([tf.keras.layers.GlobalMaxPooling1D()(h),
                                       tf.keras.layers.GlobalAveragePooling1D()(h)])
    h = tf.keras.layers.Dense(24, activation="relu")(h)
    out = tf.keras.layers.Dense(len(FAULT_CLASSES), activation="softmax")(h)
    return tf.keras.Model(inp, out)


def main() -> None:
    """Train, convert, evaluate, write."""
    t0 = time.perf_counter()
    seasons = simulate_all()
    data = fault_dataset(seasons)
    print(f"{len(data['y'])} windows built in {time.perf_counter() - t0:.0f} s")
    split = np.array([config.split_of(int(y)) for y in data["year"]])
    rng = np.random.default_rng(config.SEED)
    tr = np.flatnonzero(split == "train")
    va = np.flatnonzero(split == "validation")
    te = np.flatnonzero(split == "test")
    x, y = data["x"], data["y"].astype(np.int64)

    tf = deterministic_tf(config.SEED)
    model = build_model(tf)
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    stop = tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    model.fit(x[tr], y[tr], validation_data=(x[va], y[va]), epochs=EPOCHS, batch_size=128, verbose=2,
              callbacks=[stop])

    rep = x[tr][rng.choice(len(tr), 1000, replace=False)].astype(np.float32)
    tflite = to_int8_tflite(tf, model, rep)
    pred = run_tflite(tflite, x[te]).argmax(axis=1)
    keras_pred = model.predict(x[te], verbose=0).argmax(axis=1)
    rule = data["rule"][te]
    yt = y[te]
    results = {
        "windows": {"train": len(tr), "validation": len(va), "test": len(te)},
        "test": {
            "int8": per_class(yt, pred),
            "keras_fp32": per_class(yt, keras_pred),
            "rules": per_class(yt, rule),
            "int8_fault_vs_normal": {
                "precision": float(((pred > 0) & (yt > 0)).sum() / max((pred > 0).sum(), 1)),
                "recall": float(((pred > 0) & (yt > 0)).sum() / max((yt > 0).sum(), 1)),
            },
            "int8_agrees_with_fp32": float((pred == keras_pred).mean()),
        },
        "params": int(model.count_params()),
        "size_bytes": len(tflite),
        "sha256": sha256_bytes(tflite),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    config.FILES_DIR.mkdir(parents=True, exist_ok=True)
    (config.FILES_DIR / f"{NAME}.tflite").write_bytes(tflite)
    write_json(config.WORK_DIR / "fault_results.json", results)
    write_manifest(NAME, VERSION, tflite, kind="fault", extra={})
    kinds = data["kind"][te]
    rain_ctx = data["rain_ctx"][te]
    config.TESTSET_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        config.TESTSET_DIR / "fault_test.npz",
        readings=encode(data["raw"][te], kinds),
        rain=encode(rain_ctx, np.full(len(te), SENSOR_KINDS.index("rain"), dtype=np.int8)),
        has_rain=data["has_rain"][te], kind=kinds, label=data["y"][te], year=data["year"][te],
        features_head=x[te][:FEATURE_CHECK],
    )
    print(results)


if __name__ == "__main__":
    main()
