"""The wave planning both rollout paths share: ``cut_waves`` (provisioning/fleet/waves.py), used by
balena's ``plan_waves`` and by the centre's MQTT ``plan_waves`` (provisioning/centre/waves.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from provisioning.centre.waves import plan_waves as centre_plan
from provisioning.fleet.waves import Change, Device, cut_waves
from provisioning.fleet.waves import plan_waves as fleet_plan


def test_cut_at_cumulative_counts_skipping_those_not_beyond_the_last() -> None:
    assert cut_waves("abcdefghij", [2, 2, 1, 5, 10]) == [["a", "b"], ["c", "d", "e"], ["f", "g", "h", "i", "j"]]
    assert cut_waves("abc", [0, 2]) == [["a", "b"]]  # no canary; "c" is past the last count
    assert cut_waves("abc", [3, 3]) == [["a", "b", "c"]]
    assert cut_waves([], [0, 0]) == []


@given(data=st.data(), n=st.integers(0, 80))
def test_waves_are_consecutive_non_empty_and_end_at_the_highest_count(data: st.DataObject, n: int) -> None:
    marks = data.draw(st.lists(st.integers(-2, n), max_size=6))
    items = list(range(n))
    waves = cut_waves(items, marks)
    assert all(waves)
    assert [x for w in waves for x in w] == items[: max([0, *marks])]


def test_the_centre_plans_a_canary_then_cumulative_fractions_then_the_rest() -> None:
    sites = [f"s{i:03d}" for i in range(200)]
    waves = centre_plan(sites, 2, [0.1, 0.5])
    assert [len(w) for w in waves] == [2, 18, 80, 100]  # the waves of docs/benchmarks.md's fleet run
    assert [s for w in waves for s in w] == sites
    assert [len(w) for w in centre_plan(sites[:3], 5, [0.5])] == [3]
    assert [len(w) for w in centre_plan(sites[:10], 0, [0.25])] == [3, 7]


def test_balena_and_centre_plans_cut_the_same_way() -> None:
    devs = [Device(f"d{i:02d}", "n", True, None, "x", None) for i in range(30)]
    fleet = [[d.uuid for d in w] for w in fleet_plan(devs, Change(release="a" * 40), 2, [25, 50, 100])]
    assert fleet == centre_plan([d.uuid for d in devs], 2, [0.25, 0.5])
