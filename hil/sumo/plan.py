"""Derive the rig's approved plan (groups, conflict matrix, permissive pairs, stages) from the SUMO net.

The foe matrix comes from the junction's right-of-way logic (``<request foes=...>``, read with
sumolib), mapped from link indices to signal groups. A foe pair that an approved stage shows
together is a permissive pair; the stream that gives way is the one the stage shows as ``g`` (if both
do, the turning one: left before right).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.sumo.scenario import ARMS, TURNS

TLS = "c"
CROSSWALK_M = 16.0  # four 3.2 m lanes plus the 2 m medians at the stop line, as measured in the net


def _arm(edge_id: str) -> str:
    return edge_id.split("_")[0]


def group_links(
    net_path: Path, tls: str = TLS, arm_of: Callable[[str], str] = _arm
) -> tuple[dict[str, list[int]], dict[int, int]]:
    """Signal group -> TLS link indices, and TLS link index -> junction request index.

    ``arm_of`` names the arm (n, e, s, w) of an edge id (the corridor prefixes its junction).
    """
    import sumolib

    net = sumolib.net.readNet(str(net_path), withFoes=True, withInternal=True, withPedestrianConnections=True)
    node = net.getNode(tls)
    groups: dict[str, list[int]] = {}
    request: dict[int, int] = {}
    for in_lane, out_lane, link in net.getTLS(tls).getConnections():
        conn = next(c for c in in_lane.getOutgoing() if c.getToLane() == out_lane)
        request[link] = node.getLinkIndex(conn)
        from_edge = in_lane.getEdge()
        if from_edge.getFunction() == "walkingarea":
            arm = arm_of(out_lane.getEdge().getCrossingEdges()[0].getID())
            name = f"{arm}_ped"
        else:
            arm = arm_of(from_edge.getID())
            exit_arm = arm_of(out_lane.getEdge().getID())
            name = f"{arm}_{('right', 'through', 'left')[TURNS[arm].index(exit_arm)]}"
        groups.setdefault(name, []).append(link)
    return {k: sorted(v) for k, v in sorted(groups.items())}, request


def link_states(n_links: int, links: dict[str, list[int]], shown: dict[str, str]) -> str:
    """A SUMO ``state`` string: each group's signal (``G``, ``g``, ``y``, ``r``) on its links
    (``links`` from :func:`group_links`), red on every link of a group not shown."""
    chars = ["r"] * n_links
    for g, c in shown.items():
        for i in links[g]:
            chars[i] = c
    return "".join(chars)


def stages() -> list[dict[str, Any]]:
    """Through stages with permissive lefts and parallel walks, then lagging protected lefts."""
    out: list[dict[str, Any]] = []
    for axis, cross in (("ns", "ew"), ("ew", "ns")):
        a, b = axis[0], axis[1]
        c, d = cross[0], cross[1]
        out.append(
            {
                "name": f"{axis}_through",
                "green": [f"{a}_through", f"{b}_through", f"{c}_ped", f"{d}_ped"],
                "yield": [f"{a}_right", f"{b}_right", f"{a}_left", f"{b}_left"],
                "max_green_s": 50.0,
            }
        )
        out.append(
            {
                "name": f"{axis}_left",
                "green": [f"{a}_left", f"{b}_left"],
                "max_green_s": 20.0,
                "skippable": True,
            }
        )
    return out


def intersection(
    net_path: Path, tls: str = TLS, prefix: str = "", arm_of: Callable[[str], str] = _arm
) -> dict[str, Any]:
    """The rig's intersection config (the ``traffic.intersections[0]`` mapping); a corridor junction
    passes its light ``tls``, the ``prefix`` of its detector ids and how its edges name their arm."""
    import sumolib

    groups, request = group_links(net_path, tls, arm_of)
    net = sumolib.net.readNet(str(net_path), withFoes=True, withInternal=True, withPedestrianConnections=True)
    node = net.getNode(tls)
    link_group = {link: g for g, links in groups.items() for link in links}
    foes: set[tuple[str, str]] = set()
    for la, ra in request.items():
        for lb, rb in request.items():
            ga, gb = link_group[la], link_group[lb]
            if ga == gb or not node.areFoes(ra, rb):
                continue
            foes.add((min(ga, gb), max(ga, gb)))
    stage_list = stages()
    permissive: dict[frozenset[str], str] = {}
    for st in stage_list:
        shown = dict.fromkeys(st["green"], "G") | dict.fromkeys(st.get("yield", []), "g")
        for a, b in foes:
            if a in shown and b in shown:
                if shown[a] == "g" and shown[b] == "G":
                    permissive[frozenset((a, b))] = a
                elif shown[b] == "g" and shown[a] == "G":
                    permissive[frozenset((a, b))] = b
                else:
                    permissive[frozenset((a, b))] = _junior(a, b)
    return {
        "name": tls,
        "groups": [
            {"name": g, "kind": "pedestrian", "crossing_m": CROSSWALK_M}
            if g.endswith("_ped")
            else {"name": g}
            for g in groups
        ],
        "conflicts": [list(p) for p in sorted(foes)],
        "permissive": [
            {"yield": y, "to": next(iter(pair - {y}))}
            for pair, y in sorted(permissive.items(), key=lambda x: sorted(x[0]))
        ],
        "stages": stage_list,
        "plans": [
            {
                "name": "base",
                "cycle_s": 100.0,
                "splits": {"ns_through": 38.0, "ns_left": 12.0, "ew_through": 38.0, "ew_left": 12.0},
            }
        ],
        "detectors": [
            {"name": f"{prefix}{kind}_{a}_{lane}", "group": f"{a}_{'left' if lane == 3 else 'through'}", "kind": k}
            for a in ARMS
            for lane in (1, 2, 3)
            for kind, k in (("loop", "loop"), ("zone", "zone"))
        ],
        "output": {"driver": "sumo", "tls_id": tls, "links": groups},
    }


def _junior(a: str, b: str) -> str:
    """Of two permissive movements, the turning one that gives way (left before right before through)."""
    rank = {"ped": 0, "through": 1, "right": 2, "left": 3}
    return a if rank[a.split("_")[1]] >= rank[b.split("_")[1]] else b
