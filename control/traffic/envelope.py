"""The safety envelope: the only path from a controller to a signal output.

It holds the approved plan's conflict matrix and permissive pairs and refuses any state that would
show conflicting streams, cut a minimum green or a yellow short, turn yellow back to green, skip the
red or pedestrian clearance, or go from green straight to red. The rules follow what a cabinet's
malfunction management unit checks (conflict, short yellow, yellow plus red clearance; NEMA TS2 MMU,
e.g. EDI MMU2-16LE) plus the timing rules of the ITE yellow formula and MUTCD §4D.26 and §4E.06.

On a lost link, a read-back that does not match what was written, a device that tripped on its own
or any internal doubt it flashes the junction yellow and latches until an operator clears it. A lost
link is ``limits.link_failures`` consecutive failed exchanges or no good read-back for
``limits.link_timeout_s``, whichever comes first; a failed state write is retried within the same
tick, once (it is idempotent: the whole state and a new sequence number), so an isolated lost frame on a
marginal RS-485 line neither flashes the junction nor shifts a timed interval. Every latch is
reported as an ``envelope.flash`` alarm naming its reason, with the cause in its message.

Every change is timed from its confirmed read-back, not from the tick that asked for it: the cabinet's
monitor times a change from when the write lands, which may be late on a slow or jittery line, and a
read-back showing it proves it has landed. So no interval the cabinet sees is shorter than the plan's.
The controller times from its ticks; a change it asks for on time by its own clock is held (the state
shown is kept for a tick) while it falls short only by how late earlier changes were confirmed.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from control.traffic.config import IntersectionConfig
from drivers.signals.base import ShownState, SignalOutput
from drivers.signals.indications import Indication, SignalState, format_state
from kernel.errors import AgentError, FrameError, SafetyViolation
from kernel.readings import Priority, Reading

log = logging.getLogger("kbe.traffic")

R, Y, G, GY = Indication.RED, Indication.YELLOW, Indication.GREEN, Indication.GREEN_YIELD
ACTIVE = frozenset((G, GY, Y))
GREENS = frozenset((G, GY))
COMMANDABLE = frozenset((R, Y, G, GY))
TIMING_RULES = frozenset(("min_green", "short_yellow", "red_clearance", "ped_clearance"))
LAG_MAX_S = 0.5  # the most a lost frame may shift a change: two exchange timeouts and a tick
LAG_HOLD_S = 300.0  # how long after a lost frame a change may still be held by that lag
RULES = (
    "bad_command",
    "flash_latched",
    "conflict",
    "min_green",
    "no_yellow",
    "bad_transition",
    "yellow_to_green",
    "short_yellow",
    "long_yellow",
    "red_clearance",
    "ped_clearance",
)


@dataclass
class _Timer:
    shown: Indication
    since: float
    green_since: float
    red_since: float
    walk_end: float


class ConflictMatrix:
    """Foes and permissive pairs of one intersection, from its approved plan."""

    def __init__(self, ix: IntersectionConfig) -> None:
        self.foes: dict[str, set[str]] = {g.name: set() for g in ix.groups}
        for a, b in ix.conflicts:
            self.foes[a].add(b)
            self.foes[b].add(a)
        self.yielder: dict[frozenset[str], str] = {
            frozenset((p.yield_, p.to)): p.yield_ for p in ix.permissive
        }

    def conflicts_in(self, state: SignalState) -> list[tuple[str, str]]:
        """Foe pairs shown together that the plan does not permit (or where the yielder shows G)."""
        bad = []
        active = sorted(n for n, ind in state.items() if ind in ACTIVE)
        for i, a in enumerate(active):
            foes = self.foes[a]
            for b in active[i + 1 :]:
                if b in foes:
                    y = self.yielder.get(frozenset((a, b)))
                    if y is None or state[y] == G:
                        bad.append((a, b))
        return bad

    def may_run_with(self, group: str, new: Indication, foe: str) -> bool:
        """True when ``group`` may show ``new`` while its foe ``foe`` still moves (a permissive pair)."""
        y = self.yielder.get(frozenset((group, foe)))
        return y is not None and (y == foe or new == GY)


class SafetyEnvelope:
    """Validates every state change, writes it, and checks the read-back. The controller's only port."""

    def __init__(
        self,
        ix: IntersectionConfig,
        output: SignalOutput,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[Reading], None] | None = None,
        wall: Callable[[], float] = time.time,
        defer_flash: bool = False,
    ) -> None:
        self.ix = ix
        self.matrix = ConflictMatrix(ix)
        self._out = output
        self._clock = clock
        # Read-backs are stamped with this: a clock that moves during an exchange (the intersection's
        # thread judges with a clock read once per step, so it sets this to time.monotonic).
        self.confirm_clock: Callable[[], float] = clock
        self._wall = wall
        self._report = report or (lambda r: None)
        self._kind = {g.name: g.kind for g in ix.groups}
        lim = ix.limits
        self._crossing_s = {
            g.name: (g.crossing_m or 0.0) / lim.ped_speed_mps for g in ix.groups if g.kind == "pedestrian"
        }
        self.groups = tuple(g.name for g in ix.groups)
        self._group_set = set(self.groups)
        self._seq = 0
        self._expected: dict[str, Indication] | None = None
        self._timers: dict[str, _Timer] = {}
        self._last_good = clock()
        self._last_good_real = time.monotonic()  # exchanges block in real time, whatever the clock
        self._failures = 0
        self._calls: list[int] = []  # the controller's push buttons pressed, not yet taken
        self._unconfirmed: dict[int, dict[str, Indication]] = {}  # seq -> state, writes not yet read back
        self._lag = 0.0  # how late a change reached the device after a lost frame (seconds)
        self._lag_until = -math.inf
        self._change_failed_at: float | None = None  # real time a change was first lost
        self._asked_at: float | None = None  # when the controller first asked for a change still held
        self.held = 0
        self.link_errors = 0
        self.latched: str | None = None
        self.refusals: Counter[str] = Counter()
        self.flashes = 0
        self.flashed_at: float | None = None
        self._all_red(clock())
        # With defer_flash the output is not touched here: its owner thread latches again first thing.
        self.latch("startup", "the junction flashes until start() or an operator clears it", not defer_flash)

    # ---- the controller's port -------------------------------------------------------------

    def shown(self) -> dict[str, Indication]:
        """The state last read back from the output."""
        return {n: t.shown for n, t in self._timers.items()}

    def elapsed(self, group: str) -> float:
        """Seconds the group has shown its current indication."""
        return self._clock() - self._timers[group].since

    def command(self, target: SignalState) -> None:
        """Show ``target`` if every rule allows it, else raise :class:`SafetyViolation` (reported)."""
        now = self._clock()
        if self.latched is not None:
            self._refuse(
                "flash_latched", f"the junction is flashing ({self.latched}); an operator must clear it"
            )
        try:
            self.validate(target, now)
        except SafetyViolation as exc:
            if self._held_for_lag(exc, target, now):
                return
            self.refusals[exc.rule] += 1
            self._emit("envelope.refused", exc.rule, Priority.EVENT, {"message": str(exc)})
            raise
        self._write(dict(target), now)

    def validate(self, target: SignalState, now: float) -> None:
        """Raise :class:`SafetyViolation` naming the first rule ``target`` would break."""
        if target.keys() != self._group_set:
            names = set(target)
            missing, extra = sorted(self._group_set - names), sorted(names - self._group_set)
            raise SafetyViolation(
                "bad_command", f"state must name every group (missing {missing}, unknown {extra})"
            )
        for n, ind in target.items():
            if ind not in COMMANDABLE:
                raise SafetyViolation(
                    "bad_command", f"{n}: {ind!r} cannot be commanded (flash goes through flash())"
                )
            if ind == GY and self._kind[n] == "pedestrian":
                raise SafetyViolation("bad_command", f"{n}: a pedestrian head has no permissive green")
        pairs = self.matrix.conflicts_in(target)
        if pairs:
            a, b = pairs[0]
            raise SafetyViolation("conflict", f"{a}={target[a].value} and {b}={target[b].value} conflict")
        lim = self.ix.limits
        for n, new in target.items():
            t = self._timers[n]
            cur = t.shown
            ped = self._kind[n] == "pedestrian"
            if new == cur:
                if cur == Y and not ped and now - t.since > lim.yellow_max_s + 1e-9:
                    raise SafetyViolation(
                        "long_yellow", f"{n}: yellow for {now - t.since:.1f} s > {lim.yellow_max_s} s"
                    )
                continue
            if cur in GREENS and new == R:
                raise SafetyViolation("no_yellow", f"{n}: green straight to red")
            if cur == G and new == GY:
                raise SafetyViolation(
                    "bad_transition", f"{n}: protected green cannot drop to permissive without yellow"
                )
            if cur == R and new == Y:
                raise SafetyViolation("bad_transition", f"{n}: yellow follows green only")
            if cur == Y and new in GREENS:
                raise SafetyViolation("yellow_to_green", f"{n}: yellow cannot return to green")
            if cur in GREENS and new == Y:
                need = lim.min_walk_s if ped else lim.min_green_s
                if now - t.green_since < need - 1e-9:
                    raise SafetyViolation("min_green", f"{n}: green {now - t.green_since:.1f} s < {need} s")
            if cur == Y and new == R:
                need = lim.min_ped_clear_s if ped else lim.yellow
                rule = "ped_clearance" if ped else "short_yellow"
                if now - t.since < need - 1e-9:
                    raise SafetyViolation(rule, f"{n}: yellow {now - t.since:.1f} s < {need} s")
            if new in GREENS and (cur == R or (cur == GY and new == G)):
                self._check_clearance(n, new, target, now)

    def check(self) -> ShownState | None:
        """Read back and verify (call every tick): a fault, a mismatch or silence flashes the junction."""
        now = self._clock()
        if self._failures and self._overdue():
            return None
        try:
            shown = self._out.read_back()
            self._calls.extend(shown.calls)
        except FrameError as exc:
            self.latch("readback_invalid", f"read-back is not a valid state: {exc}")
            return None
        except AgentError as exc:
            self._link_failed(f"read-back failed: {exc}")
            return None
        self._failures = 0
        self._last_good_real = time.monotonic()
        if shown.fault is not None and self.latched is None:
            self.latch("device_fault", f"the controller tripped on its own: {shown.fault}")
        if self.latched is None:
            self._verify(shown, self.confirm_clock())  # a late-confirmed change is timed from this read-back
        self._last_good = now
        return shown

    def take_calls(self) -> list[int]:
        """The signal controller's push-button inputs pressed since the last call (from read-backs)."""
        calls, self._calls = self._calls, []
        return calls

    def watchdog(self) -> None:
        """Flash if no good read-back for ``link_timeout_s`` (call from a timer independent of ticks)."""
        if self.latched is None and self._clock() - self._last_good >= self.ix.limits.link_timeout_s:
            self.latch(
                "link_lost",
                f"no good read-back for {self._clock() - self._last_good:.2f} s "
                f"(limit {self.ix.limits.link_timeout_s} s; {self._failures} consecutive failures)",
            )

    # ---- flash and the operator ------------------------------------------------------------

    def latch(self, reason: str, message: str, command_output: bool = True) -> None:
        """Flash yellow now and stay latched; ``reason`` is reported as an alarm."""
        first = self.latched is None
        self.latched = self.latched or reason
        if first:
            self.flashes += 1
            self.flashed_at = self._clock()
            if reason != "startup":
                log.error("%s: flashing yellow (%s): %s", self.ix.name, reason, message)
                self._emit("envelope.flash", reason, Priority.ALARM, {"message": message})
        try:
            if command_output:
                self._out.flash()
        except AgentError as exc:
            log.error("%s: flash command failed (%s); the device watchdog must flash it", self.ix.name, exc)
        self._expected = None

    def start(self) -> None:
        """Leave the start-up flash for all red; refused if anything tripped since."""
        if self.latched != "startup":
            raise SafetyViolation(
                "flash_latched", f"{self.ix.name} is latched ({self.latched}); an operator must clear it"
            )
        self.clear("startup")

    def clear(self, operator: str) -> None:
        """Operator reset: verify the link, then come back all red with full clearances before any green."""
        self._out.reset()
        now = self.confirm_clock()  # the device restarts its clearances when the reset lands
        self.latched = None
        self._all_red(now)
        self._write(dict.fromkeys(self.groups, R), now)
        if self.latched is None and operator != "startup":
            self._emit("envelope.cleared", operator, Priority.EVENT, None)

    # ---- internals -------------------------------------------------------------------------

    def _check_clearance(self, n: str, new: Indication, target: SignalState, now: float) -> None:
        lim = self.ix.limits
        for f in self.matrix.foes[n]:
            if self.matrix.may_run_with(n, new, f):
                continue
            ft = self._timers[f]
            if ft.shown != R or target[f] != R:
                raise SafetyViolation("red_clearance", f"{n}: foe {f} is not yet red")
            if now - ft.red_since < lim.red_clearance_s - 1e-9:
                raise SafetyViolation(
                    "red_clearance",
                    f"{n}: foe {f} red for {now - ft.red_since:.1f} s < {lim.red_clearance_s} s",
                )
            crossing = self._crossing_s.get(f)
            if crossing is not None and now - ft.walk_end < crossing - 1e-9:
                raise SafetyViolation(
                    "ped_clearance",
                    f"{n}: crosswalk {f} walk ended {now - ft.walk_end:.1f} s ago < {crossing:.1f} s",
                )

    def _refuse(self, rule: str, message: str) -> None:
        self.refusals[rule] += 1
        self._emit("envelope.refused", rule, Priority.EVENT, {"message": message})
        raise SafetyViolation(rule, message)

    def _overdue(self) -> bool:
        """After a failure: latch rather than block in another exchange once ``link_timeout_s`` has
        passed in real time since the last good one (so a cut flashes within T + tick + one timeout)."""
        waited = time.monotonic() - self._last_good_real
        if self.latched is None and waited >= self.ix.limits.link_timeout_s:
            self.latch(
                "link_lost",
                f"no good read-back for {waited:.2f} s "
                f"(limit {self.ix.limits.link_timeout_s} s; {self._failures} consecutive failures)",
            )
        return self.latched is not None

    def _link_failed(self, what: str) -> bool:
        """Count one failed exchange; latch at ``link_failures`` in a row. True when latched."""
        self._failures += 1
        self.link_errors += 1
        limit = self.ix.limits.link_failures
        if self._failures >= limit:
            self.latch("link_lost", f"{self._failures} consecutive failed exchanges (limit {limit}); {what}")
            return True
        log.warning("%s: link error %d of %d allowed in a row: %s", self.ix.name, self._failures, limit, what)
        return False

    def _held_for_lag(self, exc: SafetyViolation, target: SignalState, now: float) -> bool:
        """Hold what is shown (one more tick) when a lost frame or a late read-back made a change late
        and ``target`` would be allowed had it been on time; holding only lengthens an interval."""
        if exc.rule not in TIMING_RULES or self._lag <= 0 or now > self._lag_until:
            return False
        try:
            self.validate(target, now + self._lag)
        except SafetyViolation:
            return False
        self.held += 1
        if self._asked_at is None:
            self._asked_at = now
        self._write(self.shown(), now)
        return True

    def _write(self, target: dict[str, Indication], now: float) -> None:
        # A lost frame leaves it unknown whether the device took the state: the retry writes the
        # whole state again under a new sequence number, and only a matching read-back counts.
        changes = target != self.shown()
        t0 = time.monotonic()
        for attempt in (1, 2):
            self._seq = (self._seq + 1) & 0xFFFF
            if len(self._unconfirmed) >= 16:
                self._unconfirmed.pop(next(iter(self._unconfirmed)))
            self._unconfirmed[self._seq] = target
            try:
                self._out.write(target, self._seq)
                shown = self._out.read_back()
                self._calls.extend(shown.calls)
            except FrameError as exc:
                self.latch("readback_invalid", f"read-back is not a valid state: {exc}")
                return
            except AgentError as exc:
                if changes and self._change_failed_at is None:
                    self._change_failed_at = t0
                if self._link_failed(f"write failed: {exc}") or attempt == 2 or self._overdue():
                    return  # one retry per tick, and none past the link timeout: flash within 1 s
                continue
            break
        self._failures = 0
        self._last_good_real = time.monotonic()
        self._expected = target
        if shown.fault is not None:
            self.latch("device_fault", f"the controller tripped on its own: {shown.fault}")
            return
        late = 0.0
        if self._change_failed_at is not None:
            # The change reached the device late: time it from now on, as the device does.
            late = min(LAG_MAX_S, time.monotonic() - self._change_failed_at)
            self._note_lag(late, now)
            self._change_failed_at = None
        at = now
        if changes:
            at = max(now + late, self.confirm_clock())  # confirmed: it has landed by this read-back
            asked, self._asked_at = (now if self._asked_at is None else self._asked_at), None
            self._note_lag(at - asked, now)
        self._verify(shown, at)
        self._last_good = now

    def _note_lag(self, lag: float, now: float) -> None:
        """Remember how late a change was timed against the tick that asked for it (see _held_for_lag)."""
        if lag > 0:
            self._lag, self._lag_until = max(self._lag, lag), now + LAG_HOLD_S

    def _verify(self, shown: ShownState, now: float) -> None:
        if self._expected is None:
            return
        if shown.seq is not None and self._unconfirmed.get(shown.seq) == shown.indications:
            # A write whose answer was lost may still have been applied (the last one too): a state
            # written (and so validated) since the last confirmed read-back is what the device shows.
            self._unconfirmed.clear()
            self._expected = dict(shown.indications)
            self._advance(shown.indications, now)
            return
        if shown.seq is not None and shown.seq != self._seq:
            self.latch("stale_readback", f"read-back echoes command {shown.seq}, expected {self._seq}")
            return
        if shown.indications != self._expected:
            self.latch(
                "readback_mismatch",
                f"shown {format_state(shown.indications)} but commanded {format_state(self._expected)}",
            )
            return
        self._unconfirmed.clear()
        self._advance(shown.indications, now)

    def _advance(self, shown: Mapping[str, Indication], now: float) -> None:
        for n, ind in shown.items():
            t = self._timers[n]
            if ind == t.shown:
                continue
            if ind in GREENS and t.shown not in GREENS:
                t.green_since = now
            if ind == R:
                t.red_since = now
            if self._kind[n] == "pedestrian" and t.shown == G:
                t.walk_end = now
            t.shown, t.since = ind, now

    def _all_red(self, now: float) -> None:
        # Conservative start: everything has just turned red and every crosswalk may still be in use.
        self._timers = {n: _Timer(R, now, -math.inf, now, now) for n in self.groups}

    def _emit(self, point: str, value: str, priority: Priority, meta: dict[str, str] | None) -> None:
        self._report(Reading(self.ix.name, point, value, self._wall(), priority=priority, meta=meta))
