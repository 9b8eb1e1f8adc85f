"""The stage controller: fixed time, actuated (gap-out on loops) and adaptive (zone counts and queues).

With a ``coordination`` section and a shared time base (a synchronised wall clock), actuated and
adaptive mode hold the coordinated stage to its yield point and force the other stages off at
their planned ends (see :class:`~control.traffic.config.CoordinationConfig`); fixed mode anchors its
cycle on the time base. Without a time base the junction runs free.

It runs as an interval machine. Each interval starts on the tick that enters it and ends when its
time is up, so rounding to the tick never shortens a clearance. The controller holds no output: it
asks a :class:`SignalPort` (the safety envelope) and a refused command is the envelope's business.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from control.traffic.config import IntersectionConfig, PlanConfig, StageConfig, ped_clear_s, stage_min_green
from control.traffic.detectors import DetectorBoard
from drivers.signals.indications import Indication, SignalState

Mode = Literal["fixed", "actuated", "adaptive"]
TimeBase = Callable[[], "float | None"]
"""Shared time for coordination (seconds, the same at every junction), or None when not synchronised."""
R, Y, G, GY = Indication.RED, Indication.YELLOW, Indication.GREEN, Indication.GREEN_YIELD


class SignalPort(Protocol):
    """What a controller may do with the signals: ask for a state (the envelope decides)."""

    def command(self, target: SignalState) -> None:
        """Request ``target``; raises SafetyViolation when refused."""
        ...


@dataclass
class _Ped:
    state: Indication = R
    since: float = -math.inf


class StageController:
    """Runs the stages of one intersection in order, skipping and timing them by mode."""

    ADAPTIVE_GAP_S = 2.0
    MAX_CYCLE_S = 120.0
    PRESSURE = True
    COORDINATED_PRESSURE = (
        False  # coordinated adaptive: side stages by pressure (measured worse: docs/benchmarks.md)
    )

    def __init__(
        self,
        ix: IntersectionConfig,
        port: SignalPort,
        detectors: DetectorBoard,
        clock: Callable[[], float],
        mode: Mode = "fixed",
        plan: PlanConfig | None = None,
        time_base: TimeBase | None = None,
    ) -> None:
        self.ix = ix
        self._time_base = time_base or (lambda: None)
        self._coord = _Coordination.of(ix)
        self._coord_next: tuple[float, _Coordination] | None = None  # (from, plan) not yet taken up
        self.taken_up: tuple[float, float, float] | None = None  # the last centre plan: (when, cycle, start)
        self.lapsed: tuple[float, float] | None = None  # a centre plan ran out: (when, its until_s)
        self._tb: float | None = None  # the time base read this step
        self.coordinated = False  # coordination configured and a shared time base this step
        self._hold_until = -math.inf  # coordinated stage: no end before (its yield point)
        self._force_at = math.inf  # other stages: end by (their force-off)
        self._port = port
        self.board = detectors
        self._clock = clock
        self.mode: Mode = mode
        self.plan = plan or ix.plans[0]
        self._pending: tuple[Mode, PlanConfig] | None = None
        lim = ix.limits
        self.yellow = lim.yellow
        self.red_clear = lim.red_clearance_s
        self._kind = {g.name: g.kind for g in ix.groups}
        self._fdw = {g.name: float(ped_clear_s(ix, g.name)) for g in ix.groups if g.kind == "pedestrian"}
        start_red = max([lim.red_clearance_s] + [(g.crossing_m or 0) / lim.ped_speed_mps for g in ix.groups])
        self._interval: str = "startup"
        self._until = math.ceil(start_red)
        self._since = clock()
        self.stage = len(ix.stages) - 1
        self._next = 0
        self._peds: dict[str, _Ped] = {}
        self._last_end = {s.name: -math.inf for s in ix.stages}
        self._green_len = 0.0
        self._served: set[int] = set()  # stages run since the coordinated stage last started
        self._cycle_start = clock()
        self.cycles = 0

    # ---- public --------------------------------------------------------------------------

    def set_mode(self, mode: Mode, plan: PlanConfig | None = None) -> None:
        """Switch mode (and plan) at the next stage boundary."""
        self._pending = (mode, plan or self.plan)

    def set_coordination(
        self,
        cycle_s: float,
        start_s: float,
        splits: Mapping[str, float],
        from_s: float,
        until_s: float | None = None,
    ) -> None:
        """A new coordination plan (common cycle, this junction's coordinated-stage start on the time
        base, splits), taken up at the first start of the coordinated stage at or after ``from_s`` on
        the time base (a cycle boundary); ignored without a ``coordination`` section. With
        ``until_s`` the configured plan comes back at the first such start from then on."""
        if self._coord is not None and self.ix.coordination is not None:
            co = _Coordination.build(self.ix, self.ix.coordination.stage, cycle_s, start_s, splits)
            if until_s is not None:
                co = dataclasses.replace(co, until_s=until_s)
            self._coord_next = (from_s, co)

    @property
    def next_mode(self) -> Mode:
        """The mode from the next cycle on."""
        return self._pending[0] if self._pending is not None else self.mode

    @property
    def next_plan(self) -> PlanConfig:
        """The plan from the next cycle on."""
        return self._pending[1] if self._pending is not None else self.plan

    def step(self) -> SignalState:
        """Advance the interval machine and command the resulting state through the port."""
        now = self._clock()
        self._tb = self._time_base() if self._coord is not None else None
        self.coordinated = self._tb is not None
        if not self.coordinated:
            self._hold_until, self._force_at = -math.inf, math.inf  # dropped out: free from now on
        self._advance(now)
        state = self._state()
        self._port.command(state)
        return state

    @property
    def current(self) -> StageConfig:
        """The stage running (or clearing)."""
        return self.ix.stages[self.stage]

    # ---- interval machine ----------------------------------------------------------------

    def _advance(self, now: float) -> None:
        for _ in range(4):
            held = now - self._since
            if self._interval == "startup" and held >= self._until:
                self._enter_green(self._first_stage(), now)
            elif self._interval == "green":
                self._late_walks(now)
                self._walks(now)
                if self._want_end(now) and not self._peds_busy():
                    self._next = self._choose_next()
                    self._go("yellow", now)
                else:
                    return
            elif self._interval == "yellow" and held >= self.yellow:
                self._go("red", now)
            elif self._interval == "red" and held >= self.red_clear:
                self._last_end[self.current.name] = now
                self._enter_green(self._next, now)
            else:
                return

    def _go(self, interval: str, now: float) -> None:
        self._interval, self._since = interval, now

    def _enter_green(self, stage: int, now: float) -> None:
        if stage == 0:
            self.cycles += 1
            if self._pending is not None:
                self.mode, self.plan = self._pending
                self._pending = None
        self.stage = stage
        self._go("green", now)
        st = self.current
        self._peds = {}
        for n in st.green:
            if self._kind[n] == "pedestrian" and self._walk_wanted(n):
                self._peds[n] = _Ped(G, now)
                self.board.served(n)
        self._green_len = self._fixed_green(st, now)
        self._hold_until, self._force_at = -math.inf, math.inf
        if self._coord is not None and stage == self._coord.stage:
            self._served = set()
            if self._coord_next is not None and (self._tb is None or self._tb >= self._coord_next[0]):
                self._coord = self._coord_next[1]  # a new plan: from a cycle boundary
                self._coord_next = None
                when = self._tb if self._tb is not None else math.nan
                self.taken_up = (when, self._coord.cycle_s, self._coord.start_s)
            if self._tb is not None and self._tb >= self._coord.until_s:
                self.lapsed = (self._tb, self._coord.until_s)  # the centre's plan ran out
                self._coord = _Coordination.of(self.ix)
        self._served.add(stage)
        rel = self._coord_rel()
        if rel is not None and self._coord is not None:
            self._hold_until, self._force_at = self._coord.window(stage, rel, now)
            if stage != self._coord.stage and self._coord.in_side_time(rel) and self._by_pressure():
                # Chosen by pressure: run to the end of the side time less what the stages that
                # must still run this cycle need (their minimums and changes).
                reserve = sum(
                    self._side_need(i) for i in self._pending_side() if not self._stage(i).skippable
                )
                self._force_at = now + self._coord.side_end - reserve - rel

    def _coord_rel(self) -> float | None:
        """Position in the common cycle from the coordinated stage's planned start, when coordinating."""
        if self._coord is None or self.mode == "fixed" or self._tb is None:
            return None
        return self._coord.rel(self._tb)

    def _walk_wanted(self, group: str) -> bool:
        """A crosswalk walks every time its stage runs, unless it has push buttons and no call."""
        return self.mode == "fixed" or not self.board.has_buttons(group) or group in self.board.calls

    def _late_walks(self, now: float) -> None:
        # A call placed while its stage already runs: walk now if walk and clearance fit in its max.
        lim = self.ix.limits
        green_for = now - self._since
        for n in self.current.green:
            if n in self._peds or self._kind[n] != "pedestrian" or n not in self.board.calls:
                continue
            if self.mode != "fixed" and green_for + lim.min_walk_s + self._fdw[n] <= self._max_green():
                self._peds[n] = _Ped(G, now)
                self.board.served(n)

    def _horizon_s(self) -> float:
        """Longest time to reach any stage with every stage cut to its minimum green."""
        return sum(
            (s.min_green_s if s.min_green_s is not None else self.ix.limits.min_green_s)
            + self.yellow
            + self.red_clear
            for s in self.ix.stages
        )

    def _urgent_calls(self, now: float) -> set[str]:
        """Pedestrian groups whose call must now be served first to keep ``ped_max_wait_s``."""
        limit = self.ix.limits.ped_max_wait_s - self._horizon_s()
        return {g for g, t in self.board.calls.items() if now - t >= limit}

    def _walks(self, now: float) -> None:
        lim = self.ix.limits
        green_for = now - self._since
        for n, p in self._peds.items():
            if p.state == G:
                walk = self._green_len - self._fdw[n] if self.mode == "fixed" else lim.min_walk_s
                if now - p.since >= max(walk, lim.min_walk_s) or (self._ending_early(green_for)):
                    p.state, p.since = Y, now
            elif p.state == Y and now - p.since >= self._fdw[n]:
                p.state, p.since = R, now

    def _ending_early(self, green_for: float) -> bool:
        # A stage ending before its walk is over (gap-out or max) first clears the crosswalk.
        return self.mode != "fixed" and green_for >= self._max_green() and bool(self._peds)

    def _peds_busy(self) -> bool:
        return any(p.state != R for p in self._peds.values())

    # ---- decisions -----------------------------------------------------------------------

    def _vehicle_groups(self, st: StageConfig) -> list[str]:
        return [n for n in st.green if self._kind[n] == "vehicle"]

    def _min_green(self) -> float:
        st = self.current
        return st.min_green_s if st.min_green_s is not None else self.ix.limits.min_green_s

    def _max_green(self) -> float:
        if self.mode == "fixed":
            return self._green_len
        return self.current.max_green_s

    def _fixed_green(self, st: StageConfig, now: float) -> float:
        split = self.plan.splits.get(st.name, 0.0)
        green = max(self._min_green(), split - self.yellow - self.red_clear)
        if self.mode != "fixed":
            return green
        if st is self.ix.stages[0]:
            # Anchor the cycle on its offset: the planned cycle start nearest to now (on the shared
            # time base when coordinating, so that neighbours' offsets line up).
            tb = self._tb
            err = ((tb if tb is not None else now) - self.plan.offset_s) % self.plan.cycle_s
            if err > self.plan.cycle_s / 2:
                err -= self.plan.cycle_s
            self._cycle_start = now - max(-10.0, err)
        # Each stage ends where the plan puts it, so tick rounding of clearances never accumulates.
        before = 0.0
        for s in self.ix.stages:
            if s is st:
                break
            before += self.plan.splits.get(s.name, 0.0)
        planned_end = self._cycle_start + before + split - self.yellow - self.red_clear
        return max(self._min_green(), planned_end - now)

    def _want_end(self, now: float) -> bool:
        green_for = now - self._since
        if green_for < self._min_green():
            return False
        if self.mode == "fixed":
            return green_for >= self._green_len
        if green_for >= self._max_green():
            return True
        urgent = self._urgent_calls(now)
        if urgent and not urgent & set(self.current.green):
            return True  # a pedestrian has waited long enough: cut this stage to its minimum
        if now < self._hold_until:
            return False  # the coordinated stage runs to its yield point
        if now >= self._force_at:
            return True  # force-off: the coordinated stage must start on time
        groups = self._vehicle_groups(self.current)
        if self.mode == "adaptive" and self.board.zones_fresh(groups):
            if not self._demand_elsewhere():
                return False
            return self.board.halting(groups) == 0 and self.board.gap(groups) >= self.ADAPTIVE_GAP_S
        return self.board.gap(groups) >= self.ix.gap_s if self.board.has_loops(groups) else False

    def _demand(self, st: StageConfig) -> bool:
        groups = self._vehicle_groups(st)
        if self.mode == "fixed" or any(n in self.board.calls for n in st.green):
            return True
        if self.board.zones_fresh(groups):
            return self.board.count(groups) > 0 or self.board.halting(groups) > 0
        return not self.board.has_loops(groups) or self.board.gap(groups) < (
            self._clock() - self._last_end[st.name]
        )

    def _demand_elsewhere(self) -> bool:
        return any(self._demand(s) for i, s in enumerate(self.ix.stages) if i != self.stage)

    def _choose_next(self) -> int:
        n = len(self.ix.stages)
        urgent = self._urgent_calls(self._clock()) if self.mode != "fixed" else set()
        rel = self._coord_rel()
        if rel is not None and not urgent:
            return self._coordinated_next(rel)
        if self.mode == "adaptive" and not urgent and self.PRESSURE:
            every = [g for s in self.ix.stages for g in self._vehicle_groups(s)]
            if self.board.zones_fresh(every):
                return self._pressure_next()
        for k in range(1, n + 1):
            i = (self.stage + k) % n
            st = self.ix.stages[i]
            if urgent and st.skippable and not urgent & set(st.green):
                continue  # on the way to a pedestrian who has waited long enough
            if not st.skippable or self.mode == "fixed" or self._demand(st):
                return i
        return (self.stage + 1) % n

    def _pressure_next(self) -> int:
        """Max-pressure choice: the stage with the most vehicles waiting in its zones, except that a
        stage left unserved for ``MAX_CYCLE_S`` (one that must run, or one with demand) goes first."""
        now = self._clock()
        n = len(self.ix.stages)
        best, best_key = (self.stage + 1) % n, (-1.0, -1.0)
        for k in range(1, n):
            i = (self.stage + k) % n
            st = self.ix.stages[i]
            groups = self._vehicle_groups(st)
            if st.skippable and not self._demand(st):
                continue
            waited = now - self._last_end[st.name]
            overdue = 1.0 if waited >= self.MAX_CYCLE_S else 0.0
            key = (overdue, float(self.board.halting(groups) + self.board.count(groups)) - k * 1e-3)
            if key > best_key:
                best, best_key = i, key
        return best

    def _stage(self, i: int) -> StageConfig:
        return self.ix.stages[i]

    def _by_pressure(self) -> bool:
        """Coordinated side stages chosen by pressure: adaptive mode, ``COORDINATED_PRESSURE`` and
        fresh zones everywhere (otherwise in plan order)."""
        if self.mode != "adaptive" or not self.PRESSURE or not self.COORDINATED_PRESSURE:
            return False
        return self.board.zones_fresh([g for s in self.ix.stages for g in self._vehicle_groups(s)])

    def _side_need(self, i: int) -> float:
        return self.yellow + self.red_clear + stage_min_green(self.ix, self._stage(i))

    def _pending_side(self) -> list[int]:
        """Non-coordinated stages not yet run this cycle that must run or have demand, in plan order."""
        assert self._coord is not None
        n = len(self.ix.stages)
        order = [(self._coord.stage + k) % n for k in range(1, n)]
        return [
            i
            for i in order
            if i not in self._served
            and i != self.stage
            and (not self._stage(i).skippable or self._demand(self._stage(i)))
        ]

    def _pressure_side_next(self, rel: float) -> int:
        """In the side time of a coordinated cycle: of the stages still to run, the one with the
        most vehicles waiting whose minimum fits before the side time ends with room left for the
        stages that must still run; the coordinated stage when none fits."""
        assert self._coord is not None
        pending = self._pending_side()
        must = [i for i in pending if not self._stage(i).skippable]
        best, best_key = self._coord.stage, (-1.0,)
        for k, i in enumerate(pending):
            reserve = sum(self._side_need(m) for m in must if m != i)
            if rel + self._side_need(i) + reserve > self._coord.side_end and i not in must:
                continue
            groups = self._vehicle_groups(self._stage(i))
            key = (float(self.board.halting(groups) + self.board.count(groups)) - k * 1e-3,)
            if key > best_key:
                best, best_key = i, key
        if best == self._coord.stage and must:
            return must[0]  # a stage that may not be skipped always runs
        return best

    def _coordinated_next(self, rel: float) -> int:
        """In plan order up to the coordinated stage: the next stage with demand whose minimum
        (walk and clearance included) still fits before its force-off; a stage that may not be
        skipped always runs."""
        assert self._coord is not None
        if self._coord.in_side_time(rel) and self._by_pressure():
            return self._pressure_side_next(rel)
        n = len(self.ix.stages)
        change = self.yellow + self.red_clear
        for k in range(1, n + 1):
            i = (self.stage + k) % n
            st = self.ix.stages[i]
            if i == self._coord.stage or not st.skippable:
                return i
            fits = rel + change + stage_min_green(self.ix, st) <= self._coord.force_off[i]
            if fits and self._demand(st):
                return i
        return self._coord.stage

    def _first_stage(self) -> int:
        return 0

    # ---- the state to show ---------------------------------------------------------------

    def _state(self) -> dict[str, Indication]:
        state = {g.name: R for g in self.ix.groups}
        if self._interval == "startup":
            return state
        st = self.current
        shown = dict.fromkeys(st.green, G) | dict.fromkeys(st.yield_, GY)
        for n in st.green:
            if self._kind[n] == "pedestrian":
                shown[n] = self._peds[n].state if n in self._peds else R  # no call: no walk
        if self._interval == "green":
            state.update(shown)
            return state
        nxt = self.ix.stages[self._next]
        # A group continues into the next stage unless it would drop from protected to permissive
        # green (a stage order other than the plan's: that needs its yellow first).
        keep = set(nxt.green) | {n for n in nxt.yield_ if shown.get(n) != G}
        for n, ind in shown.items():
            if self._kind[n] == "pedestrian":
                state[n] = ind
            elif n in keep and ind.is_green:
                state[n] = ind  # continues into the next stage (g becomes G there, after the clearance)
            elif self._interval == "yellow" and ind.is_green:
                state[n] = Y
        return state


@dataclass(frozen=True)
class _Coordination:
    """The coordination plan as positions in the common cycle, measured from the planned start of
    the coordinated stage: its yield point and every other stage's force-off."""

    stage: int
    cycle_s: float
    start_s: float  # the coordinated stage's planned start on the time base, modulo the cycle
    yield_s: float
    force_off: dict[int, float]
    until_s: float = math.inf  # on the time base: the configured plan comes back from then on

    @classmethod
    def of(cls, ix: IntersectionConfig) -> _Coordination | None:
        co = ix.coordination
        if co is None:
            return None
        plan = next(p for p in ix.plans if p.name == co.plan)
        names = [s.name for s in ix.stages]
        before = sum(plan.splits[names[i]] for i in range(names.index(co.stage)))
        return cls.build(ix, co.stage, plan.cycle_s, plan.offset_s + before, plan.splits)

    @classmethod
    def build(
        cls, ix: IntersectionConfig, stage: str, cycle_s: float, start_s: float, splits: Mapping[str, float]
    ) -> _Coordination:
        """The coordination of ``stage`` starting at ``start_s`` on the time base every ``cycle_s``."""
        names = [s.name for s in ix.stages]
        c = names.index(stage)
        change = ix.limits.yellow + ix.limits.red_clearance_s
        starts, t = {}, 0.0
        for k in range(len(names)):
            i = (c + k) % len(names)
            starts[i] = t
            t += splits[names[i]]
        return cls(
            stage=c,
            cycle_s=cycle_s,
            start_s=start_s % cycle_s,
            yield_s=splits[stage] - change,
            force_off={i: starts[i] + splits[names[i]] - change for i in starts if i != c},
        )

    @property
    def side_end(self) -> float:
        """Where the last side stage must end (its force-off): the coordinated stage's next start
        less a change interval."""
        return max(self.force_off.values(), default=self.yield_s)

    def in_side_time(self, rel: float) -> bool:
        """True when ``rel`` is past the coordinated stage's yield point (the side stages' time)."""
        return self.yield_s <= rel < self.cycle_s

    def rel(self, tb: float) -> float:
        """Where ``tb`` falls in the cycle, from the coordinated stage's planned start."""
        return (tb - self.start_s) % self.cycle_s

    def window(self, stage: int, rel: float, now: float) -> tuple[float, float]:
        """(hold until, force off at) on the controller's clock for a stage entered at ``rel``."""
        if stage == self.stage:
            return now + (self.yield_s - rel) % self.cycle_s, math.inf
        off = self.force_off[stage]
        if self.yield_s <= rel < off:
            return -math.inf, now + off - rel
        return -math.inf, now  # late (inside the arterial's window): end at its minimum
