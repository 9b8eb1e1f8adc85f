"""Lighting control cost: one control step of a site's controller, beside the sun-time computation
it would need per step without its per-night cache.

    .venv/bin/python bench/bench_lighting.py [--circuits 20] [--steps 20000]

Figures printed:
- ``decide``: Schedule.decide for all circuits (astro clock, calendar with Tết, profiles, overrides);
- ``step``: LightingController.step with gpiozero mock outputs (decide + apply + read-back + readings);
- baseline ``astral``: one sunset plus one sunrise from astral for the same site, which is what every
  step would pay without the cache. The ratio step/astral says how much of a tick is control work
  beyond the astronomy; a Pi 4 runs these 3-5x slower than the x86 CI machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astral import Observer
from astral.sun import sunrise, sunset
from gpiozero.pins.mock import MockFactory, MockPWMPin

from control.lighting.astro import AstroClock
from control.lighting.config import LightingConfig
from control.lighting.controller import LightingController
from control.lighting.kind import build_outputs
from control.lighting.state import LightingState

LAT, LON, TZ = 21.19, 106.08, "Asia/Ho_Chi_Minh"


def site(circuits: int) -> LightingConfig:
    return LightingConfig.model_validate(
        {
            "profiles": [
                {"name": "standard", "steps": [{"at": "22:00", "level": 70}, {"at": "00:00", "level": 50}]},
                {"name": "festive"},
            ],
            "groups": [{"name": "g", "profile": "standard"}],
            "circuits": [
                {
                    "name": f"c{i}",
                    "group": "g",
                    "lamps": 10,
                    "lamp_watts": 100,
                    "output": {"type": "gpio", "relay_pin": i, "dim_pin": i + circuits},
                }
                for i in range(circuits)
            ],
            "calendar": [
                {"name": "tet", "profile": "festive", "lunar_new_year": True, "day_offset": -1, "nights": 4}
            ],
        }
    )


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--circuits", type=int, default=12)
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    if args.circuits > 14:
        ap.error("--circuits: at most 14 (two BCM pins per circuit on 0-27)")
    cfg = site(args.circuits)
    astro = AstroClock(LAT, LON, TZ, cfg.astro)
    state = LightingState()
    ctl = LightingController(
        "bench", cfg, astro, build_outputs(cfg, MockFactory(pin_class=MockPWMPin)), state=state
    )
    t_night = dt.datetime(2026, 3, 10, 23, 0, tzinfo=ZoneInfo(TZ)).timestamp()
    obs, tz, day = Observer(LAT, LON), ZoneInfo(TZ), dt.date(2026, 3, 10)

    astral_s = per_call(lambda: (sunset(obs, day, tzinfo=tz), sunrise(obs, day, tzinfo=tz)), args.steps // 4)
    decide_s = per_call(lambda: ctl.schedule.decide(t_night), args.steps)
    loop = asyncio.new_event_loop()
    ticks = iter(range(10**9))
    step_s = per_call(lambda: loop.run_until_complete(ctl.step(t_night + next(ticks), 0.0)), args.steps)
    loop.close()
    print(f"circuits={args.circuits} steps={args.steps}")
    print(f"baseline astral sunset+sunrise: {astral_s * 1e6:8.1f} us")
    print(
        f"decide (all circuits):         {decide_s * 1e6:8.1f} us   ratio to baseline {decide_s / astral_s:5.2f}"
    )
    print(
        f"step (decide+apply+read-back): {step_s * 1e6:8.1f} us   ratio to baseline {step_s / astral_s:5.2f}"
    )
    print(f"CPU share at tick_s=5:         {step_s / 5 * 100:8.4f} %")


if __name__ == "__main__":
    main()
