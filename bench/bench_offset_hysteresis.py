"""The corridor plan from counts with and without offset hysteresis, in the same run (A/B).

    PYTHONPATH=. python bench/bench_offset_hysteresis.py --seeds 2

For each seed, the SUMO corridor (hil/sumo/corridor.py, mode ``adaptive_counts``, a simulated hour)
runs twice: offset hysteresis off (0: the best offset every update) and at the default
(``CorridorSpec.offset_hysteresis``). Printed per run: each junction's offset reversals (an offset
step followed by one the other way), the arterial and all-vehicle delay, violations; then the
delays with hysteresis over those without, and the load average.
"""

from __future__ import annotations

import argparse
import itertools
import os
from concurrent.futures import ProcessPoolExecutor

from control.traffic.coordplan import CorridorSpec
from hil.sumo import corridor


def reversals(offsets: list[float], cycle: list[float]) -> int:
    """Offset steps followed by a step the other way (modulo the cycle)."""
    steps = []
    for (a, c), b in zip(zip(offsets, cycle, strict=True), offsets[1:], strict=False):
        d = (b - a + c / 2) % c - c / 2
        if abs(d) > 0.5:
            steps.append(d)
    return sum(1 for x, y in itertools.pairwise(steps) if x * y < 0)


def _one(args: tuple[int, float]) -> corridor.CorridorResult:
    seed, hyst = args
    out = corridor.BUILD_DIR / f"hyst-{seed}-{hyst:g}"
    return corridor.run("adaptive_counts", seed, out_dir=out, offset_hysteresis=hyst)


def main() -> None:
    """Run the A/B and print it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2])
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    default = CorridorSpec((0.0,)).offset_hysteresis
    todo = [(s, h) for s in a.seeds for h in (0.0, default)]
    print(f"== offset hysteresis A/B, seeds {a.seeds}, load average {os.getloadavg()[0]:.1f}")
    with ProcessPoolExecutor(a.jobs) as pool:
        results = dict(zip(todo, pool.map(_one, todo), strict=True))
    print(f"   done, load average {os.getloadavg()[0]:.1f}")
    for seed in a.seeds:
        for h in (0.0, default):
            r = results[(seed, h)]
            cycles = [c for c, _ in r.plans]
            rev = [reversals([o[j] for _, o in r.plans], cycles) for j in range(len(corridor.JUNCTIONS))]
            print(
                f"seed {seed} hysteresis {h:.2f}: offset reversals {dict(zip(corridor.JUNCTIONS, rev, strict=True))}, "
                f"arterial {r.arterial_delay_s:.1f} s, all {r.mean_delay_s:.1f} s, side {r.side_delay_s:.1f} s, "
                f"violations {r.findings}"
            )
        off, on = results[(seed, 0.0)], results[(seed, default)]
        print(
            f"seed {seed}: with/without hysteresis: arterial {on.arterial_delay_s / off.arterial_delay_s:.3f}, "
            f"all {on.mean_delay_s / off.mean_delay_s:.3f} (load average {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
