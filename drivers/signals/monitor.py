"""The emulated controller's own conflict monitor (an MMU), independent of the agent's envelope.

It reads the approved plan itself, works on channel numbers and register codes, and checks what is
shown, never what was asked: conflicting channels active together (a permissive pair only while the
yielding channel is not steady green), green to red with no yellow, yellow back to green, short
yellow (MMU2 trips below 2.7 s; this card uses the plan's own minimum), short minimum green, missing
red clearance and missing pedestrian clearance. The first fault latches (like the MMU's output relay)
until :meth:`reset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DARK, RED, YELLOW, GREEN, GREEN_YIELD, FLASH = range(6)
ACTIVE = (YELLOW, GREEN, GREEN_YIELD)
GREENS = (GREEN, GREEN_YIELD)
EPS = 1e-6


@dataclass(frozen=True)
class ProgramCard:
    """Channel-level copy of the plan: foe matrix, permissive pairs, minimum times."""

    channels: tuple[str, ...]
    foe: tuple[tuple[bool, ...], ...]
    yields_to: dict[tuple[int, int], int]  # (a, b) -> the channel that yields
    pedestrian: tuple[bool, ...]
    crossing_s: tuple[float, ...]
    min_yellow_s: float
    min_red_clear_s: float
    min_green_s: float
    min_walk_s: float
    min_ped_clear_s: float


@dataclass
class ConflictMonitor:
    """Watches shown channel codes over time; ``fault`` latches the first problem seen."""

    card: ProgramCard
    fault: str | None = None
    faults: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.card.channels)
        self.codes = [RED] * n
        self.changed = [0.0] * n
        self.green_at = [0.0] * n
        self.red_at = [0.0] * n
        self.walk_end = [0.0] * n

    def restart(self, now: float) -> None:
        """After a reset: all red, every clearance timed from now."""
        n = len(self.card.channels)
        self.codes = [RED] * n
        self.changed = [now] * n
        self.red_at = [now] * n
        self.walk_end = [now] * n
        self.fault = None

    def observe(self, codes: list[int], now: float) -> str | None:
        """Check a newly shown state; return (and latch) a fault description or None."""
        if self.fault is not None:
            return self.fault
        c = self.card
        problem = None
        for i, new in enumerate(codes):
            old = self.codes[i]
            if new == old:
                continue
            held = now - self.changed[i]
            name = c.channels[i]
            if old in GREENS and new == RED:
                problem = problem or f"yellow_skipped {name}"
            elif old == YELLOW and new in GREENS:
                problem = problem or f"yellow_to_green {name}"
            elif old == YELLOW and new == RED:
                need = c.min_ped_clear_s if c.pedestrian[i] else c.min_yellow_s
                if held + EPS < need:
                    problem = problem or f"short_yellow {name} {held:.2f}s"
            elif old in GREENS and new == YELLOW:
                need = c.min_walk_s if c.pedestrian[i] else c.min_green_s
                if now - self.green_at[i] + EPS < need:
                    problem = problem or f"short_green {name}"
            if (new in GREENS and old not in GREENS) or (old == GREEN_YIELD and new == GREEN):
                problem = problem or self._clearance(i, new, codes, now)
        problem = problem or self._conflict(codes)
        self._record(codes, now)
        if problem is not None:
            self.fault = problem
            self.faults.append(problem)
        return problem

    def _clearance(self, i: int, new: int, codes: list[int], now: float) -> str | None:
        c = self.card
        for j, is_foe in enumerate(c.foe[i]):
            if not is_foe:
                continue
            y = c.yields_to.get((i, j))
            if y is not None and (y == j or new == GREEN_YIELD):
                continue
            if codes[j] != RED or now - self.red_at[j] + EPS < c.min_red_clear_s:
                return f"red_clearance {c.channels[i]} after {c.channels[j]}"
            if c.pedestrian[j] and now - self.walk_end[j] + EPS < c.crossing_s[j]:
                return f"ped_clearance {c.channels[i]} after {c.channels[j]}"
        return None

    def _conflict(self, codes: list[int]) -> str | None:
        c = self.card
        n = len(codes)
        for i in range(n):
            if codes[i] not in ACTIVE:
                continue
            for j in range(i + 1, n):
                if codes[j] not in ACTIVE or not c.foe[i][j]:
                    continue
                y = c.yields_to.get((i, j))
                if y is None or codes[y] == GREEN:
                    return f"conflict {c.channels[i]} {c.channels[j]}"
        return None

    def _record(self, codes: list[int], now: float) -> None:
        for i, new in enumerate(codes):
            old = self.codes[i]
            if new == old:
                continue
            if new in GREENS and old not in GREENS:
                self.green_at[i] = now
            if new == RED:
                self.red_at[i] = now
            if self.card.pedestrian[i] and old == GREEN:
                self.walk_end[i] = now
            self.changed[i] = now
        self.codes = list(codes)
