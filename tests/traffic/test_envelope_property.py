"""Property test: random command sequences with injected faults never get a violation past the envelope.

Hypothesis draws, per example, a seed and the fault mix (link loss, stale read-back, silence long
enough to trip the device watchdog, out-of-range plans); each example then runs
:data:`SEQUENCES_PER_EXAMPLE` random command sequences against the envelope and the emulated
controller, whose own conflict monitor (an independent MMU) must record no fault. The test asserts
at least 100,000 sequences in total.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from control.traffic.config import IntersectionConfig, ite_yellow_s
from drivers.signals.base import FROM_CODE
from drivers.signals.indications import Indication
from kernel.errors import SafetyViolation
from tests.traffic.helpers import GY, G, R, Rig, Y, junction

EXAMPLES = 250
SEQUENCES_PER_EXAMPLE = 400
VEHICLE = (R, Y, G, GY)
PED = (R, Y, G)
TOTAL: Counter[str] = Counter()
BASE = junction()
BASE_DATA = BASE.model_dump(by_alias=True, exclude={"output", "schedule"})


def random_target(rig: Rig, rnd: random.Random) -> dict[str, Indication]:
    shown = rig.env.shown()
    if any(v in (Indication.FLASH, Indication.DARK) for v in shown.values()):
        shown = rig.state()
    roll = rnd.random()
    if roll < 0.15:
        return {n: rnd.choice(PED if rig.env._kind[n] == "pedestrian" else VEHICLE) for n in shown}
    target = dict(shown)
    if roll < 0.85:
        for n in rnd.sample(sorted(shown), rnd.choice((1, 1, 2, 3))):
            target[n] = rnd.choice(PED if rig.env._kind[n] == "pedestrian" else VEHICLE)
    return target


def random_plan(rnd: random.Random) -> dict[str, Any]:
    """A plan whose limits and splits are each in range or (one time in five) out of range."""

    def pick(good: tuple[float, float], bad: tuple[float, float]) -> float:
        return round(rnd.uniform(*(bad if rnd.random() < 0.2 else good)), 1)

    data: dict[str, Any] = {**BASE_DATA}
    limits = dict(data["limits"])
    limits.update(
        yellow_s=rnd.choice((None, pick((3.5, 6.0), (0.5, 9.0)))),
        red_clearance_s=pick((1.0, 6.0), (0.0, 9.0)),
        min_green_s=pick((3.0, 10.0), (0.0, 60.0)),
        speed_kmh=rnd.choice((30, 40, 50, 50, 50, 60, 70, 100)),
    )
    data["limits"] = limits
    splits = {s: pick((26.0, 45.0), (2.0, 20.0)) for s in ("ns", "ns_left", "ew", "ew_left")}
    data["plans"] = [{"name": "p", "cycle_s": sum(splits.values()), "splits": splits}]
    return data


def check_plan(rnd: random.Random) -> None:
    data = random_plan(rnd)
    try:
        ix = IntersectionConfig.model_validate(data)
    except ValidationError:
        TOTAL["plans_refused"] += 1
        return
    TOTAL["plans_accepted"] += 1
    lim = ix.limits
    assert 3.0 <= lim.yellow <= 6.0
    assert lim.yellow >= ite_yellow_s(lim.speed_kmh)
    assert 1.0 <= lim.red_clearance_s <= 6.0
    for s in ix.stages:
        assert ix.plans[0].splits[s.name] >= lim.min_green_s + lim.yellow + lim.red_clearance_s


def run_sequence(rig: Rig, rnd: random.Random, faults: dict[str, float]) -> None:
    fault = rnd.random()
    inject = None
    for name, p in faults.items():
        fault -= p
        if fault < 0:
            inject = name
            break
    if inject == "plan":
        check_plan(rnd)
    at = rnd.randint(0, 2)
    for k in range(rnd.randint(1, 4)):
        if k == at and inject == "link_loss":
            rig.link.down = True
        if k == at and inject == "stale":
            rig.link.stale = True
        rig.clock.t += 2.0 if (k == at and inject == "silence") else rnd.choice((0.05, 0.1, 0.2, 0.3, 0.45))
        rig.emu.poll()
        try:
            rig.env.command(random_target(rig, rnd))
            TOTAL["accepted"] += 1
        except SafetyViolation as exc:
            TOTAL[f"refused:{exc.rule}"] += 1
            if rig.env.latched is None:
                hold = rig.env.shown()  # the runner keeps the heartbeat going with the state shown
                try:
                    rig.env.command(hold)
                except SafetyViolation:
                    TOTAL["hold_refused"] += 1
        rig.env.check()
        if rig.env.latched is None and rig.emu.fault is None:
            assert {
                n: FROM_CODE[c] for n, c in zip(rig.env.groups, rig.emu.shown, strict=True)
            } == rig.env.shown()
    rig.link.down = rig.link.stale = False
    if rig.env.latched is not None or rig.emu.fault is not None:
        TOTAL[f"flash:{rig.env.latched}"] += 1
        rig.env.clear("property-test")
    TOTAL["sequences"] += 1


fault_mix = st.fixed_dictionaries(
    {
        "link_loss": st.floats(0.0, 0.05),
        "stale": st.floats(0.0, 0.05),
        "silence": st.floats(0.0, 0.05),
        "plan": st.floats(0.0, 0.05),
    }
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 2**32 - 1), faults=fault_mix)
def _sequences(seed: int, faults: dict[str, float]) -> None:
    rnd = random.Random(seed)
    rig = Rig()
    for _ in range(SEQUENCES_PER_EXAMPLE):
        run_sequence(rig, rnd, faults)
        assert rig.emu.monitor.faults == [], rig.emu.monitor.faults


def test_random_sequences_with_faults_never_violate() -> None:
    TOTAL.clear()
    _sequences()
    assert TOTAL["sequences"] >= 100_000
    assert TOTAL["accepted"] > 10_000, TOTAL  # enough legal changes to reach every interval
    assert TOTAL["refused:conflict"] > 0
    assert TOTAL["refused:min_green"] > 0
    print(dict(TOTAL))
    assert TOTAL["flash:link_lost"] > 0
    assert TOTAL["flash:stale_readback"] > 0
    assert TOTAL["flash:device_fault"] > 0
    assert TOTAL["plans_refused"] > 0
    assert TOTAL["plans_accepted"] > 0
    print(dict(TOTAL))
