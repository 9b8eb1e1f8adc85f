"""The emulated controller's programming card, wired from the approved plan as a technician would."""

from __future__ import annotations

from control.traffic.config import IntersectionConfig
from drivers.signals.monitor import ProgramCard


def program_card(ix: IntersectionConfig) -> ProgramCard:
    """Wire the card from the approved plan, as a technician would."""
    names = tuple(g.name for g in ix.groups)
    index = {n: i for i, n in enumerate(names)}
    n = len(names)
    foe = [[False] * n for _ in range(n)]
    for ga, gb in ix.conflicts:
        foe[index[ga]][index[gb]] = foe[index[gb]][index[ga]] = True
    yields: dict[tuple[int, int], int] = {}
    for p in ix.permissive:
        ia, ib = index[p.yield_], index[p.to]
        yields[(ia, ib)] = yields[(ib, ia)] = ia
    lim = ix.limits
    return ProgramCard(
        channels=names,
        foe=tuple(tuple(r) for r in foe),
        yields_to=yields,
        pedestrian=tuple(g.kind == "pedestrian" for g in ix.groups),
        crossing_s=tuple((g.crossing_m or 0.0) / lim.ped_speed_mps for g in ix.groups),
        min_yellow_s=lim.yellow_min_s,
        min_red_clear_s=lim.red_clearance_s,
        min_green_s=lim.min_green_s,
        min_walk_s=lim.min_walk_s,
        min_ped_clear_s=lim.min_ped_clear_s,
    )
