"""The stage controller in simulated time against the emulated controller, the schedule, commands."""

from __future__ import annotations

import datetime as dt
import itertools
import time

from control.traffic.card import program_card
from control.traffic.commands import TrafficCommands
from control.traffic.runner import Intersection
from control.traffic.schedule import active_entry, day_type
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.modbus import ModbusSignalController
from kernel.commands import CommandRouter, IncomingCommand
from tests.traffic.helpers import G, SimClock, junction


def make(mode: str = "fixed") -> tuple[Intersection, ControllerEmulator, SimClock]:
    ix = junction()
    clock = SimClock(0.0)
    emu = ControllerEmulator(program_card(ix), clock, watchdog_s=0.5)
    out = ModbusSignalController(tuple(g.name for g in ix.groups), DirectLink(emu))
    inter = Intersection(ix, out, clock, mode=mode)  # type: ignore[arg-type]
    inter.start()
    return inter, emu, clock


def run(inter: Intersection, clock: SimClock, seconds: float, feed=None) -> list[str]:
    stages: list[str] = []
    end = clock.t + seconds
    while clock.t < end:
        clock.t = round(clock.t + 0.1, 6)
        if feed is not None:
            feed(inter, clock.t)
        inter.tick()
        assert inter.envelope.latched is None, inter.envelope.latched
        name = inter.controller.current.name
        if not stages or stages[-1] != name:
            stages.append(name)
    return stages


def test_fixed_time_runs_every_stage_at_its_split() -> None:
    inter, emu, clock = make("fixed")
    stages = run(inter, clock, 400)
    assert stages[1:9] == ["ns", "ns_left", "ew", "ew_left"] * 2
    assert emu.monitor.faults == []
    assert inter.envelope.refusals == {}
    assert inter.controller.cycles >= 4


def test_actuated_skips_left_stages_without_calls_and_gaps_out() -> None:
    inter, emu, clock = make("actuated")

    def feed(i: Intersection, t: float) -> None:
        i.board.loop("loop_ns", int(t * 10) % 20 == 0)  # a vehicle every 2 s on the main road

    stages = run(inter, clock, 300, feed)
    stages = stages[1:]  # the first entry is the start-up interval
    assert "ns_left" not in stages
    assert "ew_left" not in stages
    assert stages.count("ns") >= 2
    assert emu.monitor.faults == []


def test_adaptive_serves_the_queue_and_skips_empty_bays() -> None:
    inter, emu, clock = make("adaptive")

    def feed(i: Intersection, t: float) -> None:
        for z in ("zone_ns", "zone_ew", "zone_ns_left", "zone_ew_left"):
            queue = 6 if z == "zone_ns_left" else (3 if z == "zone_ew" else 0)
            i.board.zone(z, queue, queue, queue * 6.0)

    stages = run(inter, clock, 300, feed)[1:]
    assert "ns_left" in stages
    assert "ew_left" not in stages
    assert emu.monitor.faults == []


def test_adaptive_chooses_the_stage_order_by_pressure_and_serves_every_stage_in_time() -> None:
    """Heavy east-west, light north-south left: after the north-south through stage the controller
    goes straight to the heavier east-west stage (out of the plan's order), yet the light left
    stage, overdue after 120 s, still runs; the envelope and the cabinet's monitor see nothing wrong
    in the new transitions (a protected left dropping to permissive gets its yellow)."""
    inter, emu, clock = make("adaptive")
    counts = {"zone_ns": 4, "zone_ew": 12, "zone_ns_left": 1, "zone_ew_left": 0}

    def feed(i: Intersection, t: float) -> None:
        for z, n in counts.items():
            i.board.zone(z, n, n, n * 6.0)

    ends: dict[str, float] = {}
    seen: list[tuple[str, float]] = []

    def track(i: Intersection, t: float) -> None:
        feed(i, t)
        name = i.controller.current.name
        if not seen or seen[-1][0] != name:
            seen.append((name, t))
        ends[name] = t

    run(inter, clock, 600, track)
    order = [n for n, _ in seen[1:]]
    pairs = set(itertools.pairwise(order))
    assert ("ns", "ew") in pairs  # the empty-ish left is passed over for the heavier stage
    assert "ns_left" in order  # but served once overdue
    starts = [t for n, t in seen if n == "ns_left"]
    assert all(b - a <= 120 + 45 + 40 + 20 for a, b in itertools.pairwise(starts)), starts
    assert emu.monitor.faults == []
    assert inter.envelope.refusals == {}


def test_adaptive_with_stale_zones_falls_back_to_loops() -> None:
    inter, _, clock = make("adaptive")

    def feed(i: Intersection, t: float) -> None:
        i.board.loop("loop_ns_left", int(t * 10) % 100 == 0)  # no zone data at all, loop calls only
        if t < 5:
            i.board.zone("zone_ew_left", 5, 5, 30.0)  # goes stale after 5 s

    stages = run(inter, clock, 300, feed)[1:]
    assert "ns_left" in stages
    assert "ew_left" not in stages
    assert not inter.board.zones_fresh(["ew_left"])


def test_schedule_picks_day_type_and_time() -> None:
    sched = junction().schedule
    assert sched is not None
    monday = dt.datetime(2026, 11, 23, 7, 0)
    assert day_type(sched, monday.date()) == "weekday"
    assert (active_entry(sched, monday).plan, active_entry(sched, monday).mode) == ("am_peak", "adaptive")
    assert active_entry(sched, monday.replace(hour=10)).mode == "actuated"
    assert active_entry(sched, monday.replace(hour=5)).plan == "base"
    tet = dt.datetime(2026, 2, 17, 7, 0)  # a Tuesday, but Tết
    assert day_type(sched, tet.date()) == "holiday"
    assert active_entry(sched, tet).mode == "fixed"
    assert active_entry(sched, tet.replace(hour=9)).mode == "actuated"


def test_router_routes_traffic_commands() -> None:
    inter, _, _ = make("fixed")
    router = CommandRouter("bn-tl-001")
    TrafficCommands({"ltt-ngt": inter}).register(router)
    now = time.time()
    cmd = IncomingCommand(
        "c1",
        "bn-tl-001",
        "traffic",
        now,
        now + 60,
        {"action": "set_mode", "intersection": "ltt-ngt", "mode": "adaptive"},
    )
    assert router.dispatch(cmd).outcome == "accepted"
    assert inter.controller.next_mode == "adaptive"
    assert router.dispatch(cmd).outcome == "refused"  # replay
    router.close()


def test_commands_change_mode_and_plan_and_refuse_out_of_range() -> None:
    inter, _, clock = make("fixed")
    cmds = TrafficCommands({"ltt-ngt": inter})
    ok = cmds.apply_command({"action": "set_mode", "intersection": "ltt-ngt", "mode": "actuated"})
    assert ok.outcome == "accepted"
    bad = cmds.apply_command(
        {
            "action": "set_plan",
            "intersection": "ltt-ngt",
            "plan": {
                "name": "short",
                "cycle_s": 40,
                "splits": {"ns": 10, "ns_left": 10, "ew": 10, "ew_left": 10},
            },
        }
    )
    assert bad.outcome == "refused"
    assert "plans[2].splits.ns" in bad.reason
    good = cmds.apply_command(
        {
            "action": "set_plan",
            "intersection": "ltt-ngt",
            "plan": {
                "name": "p90",
                "cycle_s": 90,
                "splits": {"ns": 36, "ns_left": 12, "ew": 30, "ew_left": 12},
            },
        }
    )
    assert good.outcome == "accepted"
    run(inter, clock, 250)
    assert inter.controller.plan.name == "p90"
    assert inter.controller.mode == "actuated"
    assert cmds.apply_command({"action": "flash", "intersection": "ltt-ngt"}).outcome == "accepted"
    assert inter.envelope.latched == "operator_flash"
    assert cmds.apply_command({"action": "clear_flash", "intersection": "ltt-ngt"}).outcome == "refused"
    cleared = cmds.apply_command({"action": "clear_flash", "intersection": "ltt-ngt", "operator": "op1"})
    assert cleared.outcome == "accepted"
    assert inter.envelope.latched is None
    status = cmds.apply_command({"action": "status", "intersection": "ltt-ngt"})
    assert status.outcome == "accepted"
    assert '"shown": {"ew": "r", "ew_left": "r", "ns": "r"' in status.reason
    assert cmds.apply_command({"action": "nope", "intersection": "ltt-ngt"}).outcome == "refused"
    assert cmds.apply_command({"action": "status", "intersection": "x"}).outcome == "refused"


def test_refused_controller_command_flashes() -> None:
    inter, emu, clock = make("fixed")
    run(inter, clock, 30)

    class Broken:
        def step(self) -> None:
            inter.envelope.command(dict.fromkeys(inter.envelope.groups, G))

    inter.controller = Broken()  # type: ignore[assignment]
    inter.tick()
    assert inter.envelope.latched == "controller_refused"
    assert set(emu.shown) <= {0, 5}
