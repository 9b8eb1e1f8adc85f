"""Coalescing sends the minimum number of requests the gap rule allows; refused blocks split."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.plan import Planner, coalesce
from drivers.modbus.profile import Point, load_profile


def pt(name: str, address: int, dtype: str = "uint16", table: str = "holding_register") -> Point:
    return Point(name=name, table=table, address=address, type=dtype)


def minimum_blocks(points: list[Point], limit: int, gap: int) -> int:
    """Brute force: fewest contiguous runs of sorted points satisfying the size and gap rule."""
    pts = sorted(points, key=lambda p: (p.address, p.end))

    @functools.lru_cache(None)
    def best(i: int) -> int:
        if i == len(pts):
            return 0
        out = 10**9
        end = pts[i].end
        for j in range(i, len(pts)):
            if j > i:
                if pts[j].address - end > gap:
                    break
                end = max(end, pts[j].end)
            if end - pts[i].address > limit:
                break
            out = min(out, 1 + best(j + 1))
        return out

    return best(0)


@settings(max_examples=200, deadline=None)
@given(
    spec=st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(["uint16", "float32", "float64"])),
        min_size=1,
        max_size=40,
    ),
    gap=st.integers(0, 20),
    limit=st.integers(4, 125),
)
def test_coalescing_is_minimal_and_covers_every_point(spec, gap, limit):
    points = [pt(f"p{i}", a, t) for i, (a, t) in enumerate(spec)]
    blocks = coalesce(points, max_registers=limit, max_gap=gap)
    assert len(blocks) == minimum_blocks(points, limit, gap)
    covered = [p.name for b in blocks for p in b.points]
    assert sorted(covered) == sorted(p.name for p in points)
    for b in blocks:
        assert b.count <= limit
        for p in b.points:
            assert b.address <= p.address
            assert p.end <= b.address + b.count


def test_shipped_profile_request_counts():
    sdm630 = load_profile("eastron-sdm630")
    blocks = coalesce(sdm630.points, sdm630.max_registers, sdm630.max_bits, sdm630.max_gap)
    assert [(b.address, b.count) for b in blocks] == [(0, 80), (200, 6), (224, 2), (342, 4)]
    one_per_point = coalesce(sdm630.points, sdm630.max_registers, sdm630.max_bits, max_gap=0)
    assert len(one_per_point) > len(blocks)
    assert len(coalesce([pt("a", 0), pt("b", 0, table="input_register")])) == 2  # one per function code


def test_bits_tables_use_bit_counts():
    coils = [Point(name=f"c{i}", table="coil", address=i * 10, type="bool") for i in range(50)]
    blocks = coalesce(coils, max_bits=2000, max_gap=1)
    assert len(blocks) == 1
    assert blocks[0].count == 491
    assert blocks[0].fc == 1


def test_refused_block_is_split_and_remembered():
    points = [pt(f"p{i}", i) for i in range(8)]
    planner = Planner(points, 125, 2000, 8)
    [block] = planner.plan("fast")
    assert planner.refuse(block) == []
    halves = planner.plan("fast")
    assert [(b.address, b.count) for b in halves] == [(0, 4), (4, 4)]
    assert planner.plan("fast") == halves  # remembered, not re-merged
    # Keep refusing the second half until a single point is set aside.
    while True:
        last = planner.plan("fast")[-1]
        aside = planner.refuse(last)
        if aside:
            break
    assert [p.name for p in aside] == ["p7"]
    assert all("p7" not in [p.name for p in b.points] for b in planner.plan("fast"))
