"""Farm models: latency (1 thread and all threads), size, and held-out metrics against the baseline rules.

    PYTHONPATH=. /work/venv/bin/python bench/bench_farm_models.py [--n 3000]

Every latency is the median of ``n`` single-sample calls, measured in this run next to its baselines:
the bare interpreter invoke (``invoke_raw`` on an already-quantised input), the registry's invoke
(quantise + invoke + dequantise), the feature extraction, and the baseline rule on the same input.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from models.farm.evaluation import (
    TESTDATA,
    binary_scores,
    decode,
    fault_testset,
    irrigation_events,
    irrigation_testset,
    load_npz,
    per_class_scores,
    predict,
)
from models.farm.features import (
    FAULT_CLASSES,
    SENSOR_KINDS,
    PlotInfo,
    fault_features,
    fault_rule,
    irrigation_features,
    threshold_rule_score,
)
from models.farm.source import MODEL_DIR
from models.registry import ModelRegistry, quantize
from models.runtime import default_threads


def median_us(fn: Callable[[], object], n: int) -> float:
    """Median wall time of one call, in microseconds."""
    for _ in range(min(200, n)):
        fn()
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times) / 1000.0)


def latency(n: int) -> None:
    """Latency table for both models, 1 thread and all threads."""
    irr = load_npz(TESTDATA / "irrigation_test.npz")
    flt = load_npz(TESTDATA / "fault_test.npz")
    i_x = irr["features_head"][10]
    sm = decode(flt["readings"][0], 1000.0)
    kind = SENSOR_KINDS[int(flt["kind"][0])]
    f_x = fault_features(sm, kind)
    top, sub, tmax, tmin, rh, rain = (np.full(7, v) for v in (0.25, 0.28, 31.0, 23.0, 80.0, 0.0))
    doy = np.arange(280.0, 287.0)
    plot = PlotInfo(0.33, 0.13, "maize", 70.0)
    Case = tuple[str, np.ndarray, Callable[[], object], Callable[[], object]]
    cases: list[Case] = [
        ("irrigation_need", i_x,
         lambda: irrigation_features(top, sub, tmax, tmin, rh, rain, doy, 30.0, plot),
         lambda: threshold_rule_score(0.25, plot)),
        ("sensor_fault", f_x, lambda: fault_features(sm, kind), lambda: fault_rule(sm, kind)),
    ]
    print("| Model | size | threads | bare invoke µs | invoke + (de)quantise µs | features µs "
          "| full path / bare | baseline rule µs |")
    print("|---|---|---|---|---|---|---|---|")
    for threads in sorted({1, default_threads()}):
        reg = ModelRegistry(MODEL_DIR, num_threads=threads)
        for name, x, feats, rule in cases:
            model = reg.get(name)
            q = [quantize(x[None].astype(np.float32), model.manifest.inputs[0])]
            bare = median_us(partial(model.invoke_raw, q), n)
            wrapped = median_us(partial(model.invoke, x[None]), n)
            feat = median_us(feats, n)
            base = median_us(rule, n)
            size = Path(model.path).stat().st_size
            print(f"| {name} | {size / 1024:.1f} KB | {threads} | {bare:.1f} | {wrapped:.1f} | {feat:.1f} "
                  f"| {(wrapped + feat) / bare:.1f}× | {base:.1f} |")


def metrics() -> None:
    """Held-out metrics of both models against their baseline rules."""
    reg = ModelRegistry(MODEL_DIR, num_threads=1)
    ts = irrigation_testset()
    model = reg.get("irrigation_need")
    probs = predict(model, ts.x)[:, 0]
    m = binary_scores(ts.y, probs >= model.manifest.params["threshold"])
    r = binary_scores(ts.y, ts.rule >= model.manifest.params["rule_threshold"])
    print(f"\nirrigation_need on {len(ts.y)} held-out plot-days ({ts.y.mean():.1%} positive)")
    print("| | precision | recall | F1 |\n|---|---|---|---|")
    print(f"| int8 model | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |")
    print(f"| tuned threshold rule | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |")
    print(f"| model / rule | {m['precision'] / r['precision']:.2f}× | {m['recall'] / r['recall']:.2f}× "
          f"| {m['f1'] / r['f1']:.2f}× |")
    em = irrigation_events(ts, probs >= model.manifest.params["threshold"])
    er = irrigation_events(ts, ts.rule >= model.manifest.params["rule_threshold"])
    print("\n| events | irrigations warned 1–3 days ahead | alerts followed by irrigation ≤3 days "
          "| false alerts / 100 plot-days |\n|---|---|---|---|")
    for label, e in (("int8 model", em), ("tuned threshold rule", er)):
        print(f"| {label} | {e['events_warned']:.2f} | {e['alerts_followed']:.2f} "
              f"| {e['false_alerts_per_100_days']:.1f} |")

    fs = fault_testset()
    pred = predict(reg.get("sensor_fault"), fs.x).argmax(axis=1)
    got, rules = per_class_scores(fs.y, pred), per_class_scores(fs.y, fs.rule)
    print(f"\nsensor_fault on {len(fs.y)} held-out 72 h windows (precision / recall)")
    print("| class | int8 model | rules |\n|---|---|---|")
    for c in FAULT_CLASSES:
        print(f"| {c} | {got[c]['precision']:.3f} / {got[c]['recall']:.3f} "
              f"| {rules[c]['precision']:.3f} / {rules[c]['recall']:.3f} |")

    def macro_f1(s: dict[str, dict[str, float]]) -> float:
        return float(np.mean([2 * v["precision"] * v["recall"] / max(v["precision"] + v["recall"], 1e-9)
                              for v in s.values()]))

    print(f"| macro F1 | {macro_f1(got):.3f} | {macro_f1(rules):.3f} (model / rules {macro_f1(got) / macro_f1(rules):.2f}×) |")


def main() -> None:
    """Run both parts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="calls per latency figure")
    args = ap.parse_args()
    latency(args.n)
    metrics()


if __name__ == "__main__":
    main()
