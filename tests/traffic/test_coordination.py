"""Coordination: the arterial stage held to its yield point, the others forced off, on a shared time base.

The test junction's ``am_peak`` plan (cycle 100 s, offset 20 s) coordinates stage ``ew``: its
planned green runs from 77 s to 102.5 s (= 2.5 s) of the common cycle, and ``ns`` must yield by
59.5 s. The junction runs on a simulated clock against the emulated signal controller and its monitor.
"""

from __future__ import annotations

from control.traffic.card import program_card
from control.traffic.config import IntersectionConfig
from control.traffic.runner import Intersection
from control.traffic.source import TrafficSource
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.modbus import ModbusSignalController
from kernel.clock import Clock
from kernel.readings import ClockQuality, Reading
from tests.traffic.helpers import G, SimClock, junction


def coordinated() -> IntersectionConfig:
    raw = junction().model_dump(by_alias=True)
    raw["coordination"] = {"plan": "am_peak", "stage": "ew"}
    # Room for an early return: ns ends at its 45 s maximum before its force-off, and ew then holds
    # from its early start to its yield point (up to 49 s).
    raw["stages"][2]["max_green_s"] = 60
    return IntersectionConfig.model_validate(raw)


class Junction:
    """The coordinated junction in actuated mode; ``synced`` switches its time base on and off;
    ``start=False`` leaves the intersection to be started by the test."""

    def __init__(self, ix: IntersectionConfig | None = None, start: bool = True) -> None:
        self.ix = ix or coordinated()
        self.clock = SimClock(0.0)
        self.synced = True
        self.reports: list[Reading] = []
        self.emu = ControllerEmulator(program_card(self.ix), self.clock, watchdog_s=0.5)
        out = ModbusSignalController(tuple(g.name for g in self.ix.groups), DirectLink(self.emu))
        self.inter = Intersection(
            self.ix,
            out,
            self.clock,
            self.reports.append,
            mode="actuated",
            plan=self.ix.plans[1],
            time_base=lambda: self.clock.t if self.synced else None,
        )
        if start:
            self.inter.start()

    def run(self, seconds: float) -> list[tuple[float, float]]:
        """Tick with a vehicle every 2 s on the main road (ns) and one every 2 min on the others; (start, end) of each
        ``ew`` green seen."""
        greens: list[tuple[float, float]] = []
        start: float | None = None
        end = self.clock.t + seconds
        while self.clock.t < end:
            self.clock.t = round(self.clock.t + 0.1, 6)
            tenths = round(self.clock.t * 10)
            self.inter.board.loop("loop_ns", tenths % 20 == 0)
            for loop in ("loop_ew", "loop_ns_left", "loop_ew_left"):  # now and then: healthy loops
                self.inter.board.loop(loop, tenths % 1200 == 0)
            self.inter.tick()
            assert self.inter.envelope.latched is None, self.inter.envelope.latched
            green = self.inter.envelope.shown()["ew"] == G
            if green and start is None:
                start = self.clock.t
            elif not green and start is not None:
                greens.append((start, self.clock.t))
                start = None
        return greens

    def events(self) -> list[str]:
        return [str(r.value) for r in self.reports if r.point == "coordination"]


def test_coordinated_stage_holds_to_its_yield_point_and_the_main_road_is_forced_off() -> None:
    j = Junction()
    greens = j.run(800)
    # Without coordination ew (no vehicle) would get only its minimum green and ns (busy) its
    # maximum; coordinated, ew is green over its whole planned window in every cycle.
    for k in range(2, 7):
        window = (77 + 100 * k, 102.5 + 100 * k)
        assert any(s <= window[0] + 0.5 and e >= window[1] for s, e in greens), (window, greens)
    assert all(e - s <= 60 + 0.2 for s, e in greens)  # never past its maximum green
    assert j.inter.controller.coordinated
    assert j.events() == ["coordinated"]
    assert j.emu.monitor.faults == []
    assert j.inter.envelope.refusals == {}


def test_without_a_synchronised_clock_the_junction_runs_free_and_says_so() -> None:
    j = Junction()
    j.run(300)
    j.synced = False
    free = j.run(400)[1:]
    assert free
    # Free actuated: ew (no vehicle) gets only its minimum green (walk and clearance), ns runs long.
    assert all(end - start < 25.5 for start, end in free), free
    assert not j.inter.controller.coordinated
    assert j.events() == ["coordinated", "free"]
    (dropped,) = [r for r in j.reports if r.point == "coordination" and r.value == "free"]
    assert dropped.meta == {"reason": "clock not synchronised"}
    j.synced = True
    back = j.run(400)[1:]
    assert any(end - start >= 25.5 for start, end in back), back
    assert j.events() == ["coordinated", "free", "coordinated"]
    assert j.emu.monitor.faults == []
    assert j.inter.envelope.refusals == {}


def test_the_agent_shares_wall_time_only_from_a_synchronised_clock() -> None:
    ix = coordinated()
    emu = ControllerEmulator(program_card(ix), SimClock(0.0), watchdog_s=0.5)
    out = ModbusSignalController(tuple(g.name for g in ix.groups), DirectLink(emu))
    src = TrafficSource(ix, "Asia/Ho_Chi_Minh", output=out)
    assert src.shared_time() is None  # not running yet: no clock
    src.wall = Clock(override=ClockQuality.SYNCED)
    t = src.shared_time()
    assert t is not None
    assert t > 1.7e9
    for quality in (ClockQuality.RTC, ClockQuality.UNSYNCED):
        src.wall = Clock(override=quality)
        assert src.shared_time() is None


def test_a_new_plan_from_counts_is_taken_up_at_a_cycle_boundary_without_a_fault() -> None:
    """A plan sent mid-run (the coordinated stage now starting 10 s later: 87 s of the cycle) is taken
    up at the first start of the coordinated stage after its ``from`` time; before, the old plan holds."""
    j = Junction()
    plan = j.ix.plans[1]
    before = j.run(350)
    j.inter.controller.set_coordination(plan.cycle_s, 87.0, plan.splits, from_s=400.0)
    after = j.run(450)
    assert any(s <= 277.5 and e >= 302.5 for s, e in before), before  # the old window
    for k in range(4, 7):  # the new window, held to its new yield point
        assert any(s <= 87.5 + 100 * k and abs(e - (112.5 + 100 * k)) <= 0.5 for s, e in after), (k, after)
    assert not any(abs(e - 702.5) <= 0.5 for _, e in after)  # not the old yield point
    assert all(e - s <= 60 + 0.2 for s, e in after)
    assert j.events() == ["coordinated"]
    taken = [r for r in j.reports if r.point == "coordination.plan"]  # said once, when taken up
    assert [r.value for r in taken] == ["cycle 100 s, start 87 s"]
    assert taken[0].meta is not None
    assert 400.0 <= float(taken[0].meta["taken_at"]) < 500.0
    assert j.emu.monitor.faults == []
    assert j.inter.envelope.refusals == {}


def test_the_centre_hands_a_junction_its_part_of_a_corridor_plan_by_command() -> None:
    """``coordinate`` (the command path the sync layer calls) is validated like a plan and taken up
    at a cycle boundary; a split below a stage's minimum is refused and names the field."""
    from control.traffic.commands import TrafficCommands

    j = Junction()
    cmds = TrafficCommands({j.ix.name: j.inter})
    splits = dict(j.ix.plans[1].splits)
    body = {"action": "coordinate", "intersection": j.ix.name, "cycle_s": 100, "start_s": 87, "from_s": 400}
    bad = cmds.apply_command(body | {"splits": {k: (1.0 if k == "ew" else v) for k, v in splits.items()}})
    assert bad.outcome == "refused"
    assert "splits" in bad.reason
    assert cmds.apply_command({**body, "cycle_s": "long", "splits": splits}).outcome == "refused"
    j.run(350)
    ok = cmds.apply_command(body | {"splits": splits})
    assert ok.outcome == "accepted", ok.reason
    after = j.run(450)
    assert any(s <= 587.5 and abs(e - 612.5) <= 0.5 for s, e in after), after
    assert j.emu.monitor.faults == []
    assert j.inter.envelope.refusals == {}
