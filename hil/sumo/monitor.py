"""The rig's independent safety monitor: reads SUMO's shown state every step, link by link.

It never sees the controller or the envelope. Its conflict matrix comes from SUMO's own junction
logic (``<request foes>`` via sumolib); permissive pairs come from the approved plan like an MMU's
program card. On a violation it switches the light to SUMO's ``off`` program (flashing yellow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVE = set("GgysY")
GREEN = set("Gg")


@dataclass
class Violation:
    """One finding: simulation time, rule, links."""

    t: float
    rule: str
    detail: str


@dataclass
class LinkMonitor:
    """Per-link timing and pairwise conflict checks on the shown state string."""

    foes: list[set[int]]
    yielder: dict[frozenset[int], int]
    pedestrian: set[int]
    min_green_s: float = 5.0
    min_walk_s: float = 4.0
    yellow_min_s: float = 3.0
    yellow_max_s: float = 6.0
    red_clear_s: float = 1.0
    violations: list[Violation] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.foes)
        self._last = "r" * n
        self._since = [0.0] * n
        self._green_at = [0.0] * n
        self._red_at = [-1e9] * n

    def observe(self, state: str, t: float) -> list[Violation]:
        """Check one shown state; returns the new violations."""
        found: list[Violation] = []
        if "u" in state:  # a crosswalk's clearance as the rig shows it (drivers/signals/sumo.py)
            state = "".join("y" if c == "u" and i in self.pedestrian else c for i, c in enumerate(state))
        if set(state) <= {"o", "O"}:
            self._last = state
            return found
        for i, (old, new) in enumerate(zip(self._last, state, strict=True)):
            if old == new:
                if new == "y" and i not in self.pedestrian and t - self._since[i] > self.yellow_max_s + 1e-6:
                    found.append(Violation(t, "long_yellow", f"link {i}"))
                continue
            held = t - self._since[i]
            if old in GREEN and new == "r" and i not in self.pedestrian:
                found.append(Violation(t, "no_yellow", f"link {i}"))
            if old == "y" and new in GREEN:
                found.append(Violation(t, "yellow_to_green", f"link {i}"))
            if old == "y" and new == "r" and i not in self.pedestrian and held + 1e-6 < self.yellow_min_s:
                found.append(Violation(t, "short_yellow", f"link {i} {held:.1f}s"))
            if old in GREEN and new not in GREEN:
                need = self.min_walk_s if i in self.pedestrian else self.min_green_s
                if t - self._green_at[i] + 1e-6 < need:
                    found.append(Violation(t, "min_green", f"link {i}"))
            if new in GREEN and (old not in GREEN or (old == "g" and new == "G")):
                for j in self.foes[i]:
                    y = self.yielder.get(frozenset((i, j)))
                    if y is not None and (y == j or new == "g"):
                        continue
                    if state[j] == "r" and t - self._red_at[j] + 1e-6 < self.red_clear_s:
                        found.append(Violation(t, "red_clearance", f"link {i} after {j}"))
        for i, c in enumerate(state):
            if c not in ACTIVE:
                continue
            for j in self.foes[i]:
                if j > i and state[j] in ACTIVE:
                    y = self.yielder.get(frozenset((i, j)))
                    if y is None or state[y] == "G":
                        found.append(Violation(t, "conflict", f"links {i} {j} {c}{state[j]}"))
        for i, (old, new) in enumerate(zip(self._last, state, strict=True)):
            if old != new:
                self._since[i] = t
                if new in GREEN and old not in GREEN:
                    self._green_at[i] = t
                if new == "r":
                    self._red_at[i] = t
        self._last = state
        self.violations += found
        return found


def link_monitor(
    net_path: Path, tls_id: str, groups: dict[str, list[int]], permissive: list[Any]
) -> LinkMonitor:
    """Build the monitor from the net's junction logic and the plan's permissive pairs."""
    import sumolib

    net = sumolib.net.readNet(str(net_path), withFoes=True, withInternal=True, withPedestrianConnections=True)
    node = net.getNode(tls_id)
    request: dict[int, int] = {}
    for in_lane, out_lane, link in net.getTLS(tls_id).getConnections():
        conn = next(c for c in in_lane.getOutgoing() if c.getToLane() == out_lane)
        request[link] = node.getLinkIndex(conn)
    n = 1 + max(request)
    foes: list[set[int]] = [set() for _ in range(n)]
    for a, ra in request.items():
        for b, rb in request.items():
            if a != b and node.areFoes(ra, rb):
                foes[a].add(b)
                foes[b].add(a)
    yielder: dict[frozenset[int], int] = {}
    for p in permissive:
        for a in groups[p.yield_]:
            for b in groups[p.to]:
                yielder[frozenset((a, b))] = a
    pedestrian = {i for g, links in groups.items() if g.endswith("_ped") for i in links}
    # Links of one group share a signal head: never a conflict among themselves.
    for links in groups.values():
        for a in links:
            foes[a] -= set(links)
    return LinkMonitor(foes, yielder, pedestrian)
