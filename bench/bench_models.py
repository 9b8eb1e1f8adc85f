"""Every packaged model's size and latency, one thread and all threads, in the same run.

    PYTHONPATH=. python bench/bench_models.py [--runs 50] [--dir models/files]

Latency is the median of ``--runs`` bare ``Interpreter.invoke`` calls on a fixed random input
after warm-up; "with (de)quantisation" is :meth:`LoadedModel.invoke` (float in, float out).
The one-thread figure is the baseline the all-threads figure is divided by.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from models.config import PACKAGED_MODELS
from models.registry import LoadedModel, ModelRegistry
from models.runtime import default_threads, make_interpreter, select_backend


def _input(model: LoadedModel, rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    for spec in model.manifest.inputs:
        shape = [d if d > 0 else 1 for d in spec.shape]
        arrays.append(rng.uniform(-1, 1, shape).astype(np.float32))
    return arrays


def bare_latency(model: LoadedModel, threads: int, arrays: list[np.ndarray], runs: int) -> float:
    from models.registry import quantize

    interp = make_interpreter(model.path.read_bytes(), threads, select_backend())
    for det, arr, spec in zip(interp.get_input_details(), arrays, model.manifest.inputs, strict=True):
        interp.set_tensor(det["index"], quantize(arr, spec))
    for _ in range(3):
        interp.invoke()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def wrapped_latency(model: LoadedModel, arrays: list[np.ndarray], runs: int) -> float:
    model.invoke(arrays)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.invoke(arrays)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--dir", type=Path, default=PACKAGED_MODELS)
    args = ap.parse_args()
    all_threads = default_threads()
    registry = ModelRegistry(args.dir, num_threads=1)
    rng = np.random.default_rng(0)
    rows = []
    for name in registry.available():
        model = registry.load(name)
        arrays = _input(model, rng)
        one = bare_latency(model, 1, arrays, args.runs)
        many = bare_latency(model, all_threads, arrays, args.runs)
        wrapped = wrapped_latency(model, arrays, args.runs)
        rows.append(
            {
                "model": name,
                "version": model.version,
                "bytes": model.path.stat().st_size,
                "ms_1_thread": 1000 * one,
                f"ms_{all_threads}_threads": 1000 * many,
                "speedup": one / many,
                "ms_invoke_with_quantisation_1_thread": 1000 * wrapped,
            }
        )
    print(f"runtime {registry.backend.name}, {all_threads} threads available, median of {args.runs} invokes")
    print(
        f"{'model':32} {'size':>10} {'1 thread':>10} {f'{all_threads} threads':>10} {'speed-up':>8} {'+quant':>9}"
    )
    for r in rows:
        print(
            f"{r['model']:32} {r['bytes'] / 1024:8.1f} KB {r['ms_1_thread']:7.3f} ms {r[f'ms_{all_threads}_threads']:7.3f} ms"
            f" {r['speedup']:7.2f}x {r['ms_invoke_with_quantisation_1_thread']:6.3f} ms"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
