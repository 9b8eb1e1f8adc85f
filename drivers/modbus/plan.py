"""Block reads: coalesce a device's points into as few requests as the gap rule allows.

Points are grouped per table (function code), sorted by address, and merged greedily while the
block stays within the device's largest read and the unused span between points stays within
``max_gap``. Greedy extension is optimal for this rule (each block starts at the first point not
yet covered and takes as many points as it can). A block the device refuses with "illegal data
address" is split in two at a remembered boundary; a single refused point is set aside.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drivers.modbus.points import BIT_TABLES, READ_FC

if TYPE_CHECKING:
    from drivers.modbus.profile import Point

REFUSED_RETRY_S = 3600.0


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers (or bits) from ``address`` in ``table``."""

    table: str
    address: int
    count: int
    points: tuple[Point, ...] = field(compare=False)

    @property
    def fc(self) -> int:
        """Modbus function code of the read."""
        return READ_FC[self.table]


def coalesce(
    points: Iterable[Point],
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 8,
    boundaries: frozenset[tuple[str, int]] = frozenset(),
) -> list[Block]:
    """The fewest blocks covering ``points`` under the size and gap rules.

    ``boundaries`` holds ``(table, address)`` pairs where a block must not continue past a point
    ending before ``address`` and a point starting at ``address`` (remembered splits).
    """
    by_table: dict[str, list[Point]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append(p)
    blocks: list[Block] = []
    for table in sorted(by_table):
        pts = sorted(by_table[table], key=lambda p: (p.address, p.end))
        bits = table in BIT_TABLES
        limit = max_bits if bits else max_registers
        gap = max_gap * 16 if bits else max_gap
        cur: list[Point] = []
        start = end = 0
        for p in pts:
            if cur:
                new_end = max(end, p.end)
                if (
                    p.address - end <= gap
                    and new_end - start <= limit
                    and (table, p.address) not in boundaries
                ):
                    cur.append(p)
                    end = new_end
                    continue
                blocks.append(Block(table, start, end - start, tuple(cur)))
            cur, start, end = [p], p.address, p.end
        if cur:
            blocks.append(Block(table, start, end - start, tuple(cur)))
    return blocks


class Planner:
    """A device's read plan per poll class, with refused blocks split and remembered."""

    def __init__(self, points: list[Point], max_registers: int, max_bits: int, max_gap: int) -> None:
        self.points = points
        self.max_registers = max_registers
        self.max_bits = max_bits
        self.max_gap = max_gap
        self.boundaries: set[tuple[str, int]] = set()
        self.refused: dict[str, float] = {}  # point name -> monotonic time it was set aside
        self._plans: dict[str, list[Block]] = {}

    def plan(self, poll: str) -> list[Block]:
        """Blocks for the ``fast`` or ``slow`` class (refused points left out until their retry time)."""
        now = time.monotonic()
        expired = [n for n, t in self.refused.items() if now - t >= REFUSED_RETRY_S]
        for name in expired:
            del self.refused[name]
            self._plans.clear()
        if poll not in self._plans:
            pts = [p for p in self.points if p.poll == poll and p.name not in self.refused]
            self._plans[poll] = coalesce(
                pts, self.max_registers, self.max_bits, self.max_gap, frozenset(self.boundaries)
            )
        return self._plans[poll]

    def all_blocks(self) -> list[Block]:
        """Blocks covering every point (both classes), for one-shot reads."""
        return self.plan("fast") + self.plan("slow")

    def refuse(self, block: Block) -> list[Point]:
        """The device refused ``block`` (illegal data address): split it, remember the split.

        Returns the points set aside (when the block held a single point, or a single address).
        """
        self._plans.clear()
        starts = sorted({p.address for p in block.points})
        if len(starts) > 1:
            self.boundaries.add((block.table, starts[len(starts) // 2]))
            return []
        now = time.monotonic()
        for p in block.points:
            self.refused[p.name] = now
        return list(block.points)
