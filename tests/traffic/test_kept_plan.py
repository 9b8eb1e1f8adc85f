"""The centre's coordination plan kept across a restart and a flash clear (control/traffic/keep.py).

The junction of tests/traffic/test_coordination.py (``am_peak``: cycle 100 s, ``ew`` planned from 77 s
of the cycle); the centre's plan moves ``ew`` to 87 s (its yield point from 102.5 s to 112.5 s).
"""

from __future__ import annotations

import dataclasses
import json
import stat
import time
from pathlib import Path

import yaml

from agent.config import load_config
from control.traffic.card import program_card
from control.traffic.commands import TrafficCommands
from control.traffic.config import IntersectionConfig
from control.traffic.keep import KeptPlan, PlanKeeper, config_fingerprint
from control.traffic.source import CORRUPT_METRIC, TrafficSource, traffic_sources
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.modbus import ModbusSignalController
from kernel.clock import Clock
from kernel.commands import CommandOutcome, CommandRouter, IncomingCommand
from kernel.metrics import Metrics
from kernel.readings import ClockQuality, Reading
from tests.traffic import test_coordination as coordination
from tests.traffic.helpers import SITE, SimClock
from tests.traffic.test_coordination import coordinated

TZ = "Asia/Ho_Chi_Minh"


class Junction(coordination.Junction):
    """The coordinated junction of tests/traffic/test_coordination.py, started on demand, keeping
    what the intersection hands its plan keeper."""

    def __init__(self, ix: IntersectionConfig | None = None) -> None:
        super().__init__(ix, start=False)
        self.kept: list[KeptPlan | None] = []
        self.inter.on_kept = self.kept.append

    def points(self, point: str) -> list[Reading]:
        return [r for r in self.reports if r.point == point]


def _on_new_plan(greens: list[tuple[float, float]], k: int) -> bool:
    """``ew`` green over cycle ``k``'s window of the centre's plan, yielding at its new point."""
    return any(s <= 87.5 + 100 * k and abs(e - (112.5 + 100 * k)) <= 0.5 for s, e in greens)


def _body(ix: IntersectionConfig, **extra: float) -> dict[str, object]:
    return {"action": "coordinate", "intersection": ix.name, "cycle_s": 100, "start_s": 87, "from_s": 0,
            "splits": dict(ix.plans[1].splits), **extra}  # fmt: skip


def _command(body: dict[str, object], cid: str = "cmd-7") -> IncomingCommand:
    return IncomingCommand(cid, "site", "traffic", 1000.0, 1120.0, dict(body))


def _accepted(j: Junction, **extra: float) -> KeptPlan:
    out = TrafficCommands({j.ix.name: j.inter}).apply_command(
        _body(j.ix, **extra), _command(_body(j.ix, **extra))
    )
    assert out.outcome == "accepted", out.reason
    (plan,) = j.kept
    assert plan is not None
    return plan


def test_an_accepted_plan_is_kept_with_its_command_and_config(tmp_path: Path) -> None:
    j = Junction()
    j.inter.start()
    refused = TrafficCommands({j.ix.name: j.inter}).apply_command(_body(j.ix, from_s=100, until_s=100))
    assert refused.outcome == "refused"
    assert "until_s" in refused.reason
    assert j.kept == []
    plan = _accepted(j, until_s=5000)
    assert (plan.command_id, plan.issued_at, plan.expires_at) == ("cmd-7", 1000.0, 1120.0)
    assert plan.config == config_fingerprint(j.ix)
    assert (plan.cycle_s, plan.start_s, plan.until_s) == (100.0, 87.0, 5000.0)
    keeper = PlanKeeper(tmp_path / "traffic", j.ix.name)
    keeper.save(plan)
    assert stat.S_IMODE(keeper.path.stat().st_mode) == 0o600
    assert [p.name for p in keeper.path.parent.iterdir()] == [keeper.path.name]  # no temporary left
    assert keeper.load(j.ix, 100.0).plan == plan


def test_a_restarted_junction_runs_the_kept_plan_without_a_new_command(tmp_path: Path) -> None:
    first = Junction()
    first.inter.start()
    keeper = PlanKeeper(tmp_path, first.ix.name)
    keeper.save(_accepted(first))
    # The agent restarts: a fresh junction from the same config, the kept plan taken up before start.
    j = Junction()
    loaded = keeper.load(j.ix, 0.0)
    assert loaded.plan is not None
    assert loaded.dropped is None
    j.inter.coordinate(loaded.plan, restored=True)
    j.inter.start()
    greens = j.run(500)
    for k in range(1, 4):
        assert _on_new_plan(greens, k), (k, greens)
    (taken,) = j.points("coordination.plan")
    assert taken.value == "cycle 100 s, start 87 s"
    assert taken.meta is not None
    assert (taken.meta["command_id"], taken.meta["source"]) == ("cmd-7", "kept")
    assert j.kept == []  # taken up again, not written again
    assert j.emu.monitor.faults == []
    assert j.inter.envelope.refusals == {}


def test_a_cleared_flash_comes_back_on_the_centre_plan() -> None:
    j = Junction()
    j.inter.start()
    _accepted(j)
    assert _on_new_plan(j.run(300), 1)
    j.inter.envelope.latch("operator_flash", "police on site")
    j.inter.clear("nguyen.van.a")
    greens = j.run(400)
    for k in range(3, 6):  # from the first coordinated start after the clear (the configured one: 402.5)
        assert _on_new_plan(greens, k), (k, greens)
    taken = j.points("coordination.plan")
    assert len(taken) == 2  # taken up again after the clear, from its first coordinated start
    assert j.emu.monitor.faults == []
    assert j.inter.envelope.refusals == {}


def test_a_plan_that_runs_out_returns_to_the_configured_plan_and_is_dropped() -> None:
    j = Junction()
    j.inter.start()
    _accepted(j, until_s=450)
    greens = j.run(800)
    assert _on_new_plan(greens, 2), greens
    for k in range(4, 7):  # the configured window (77 s to 102.5 s of the cycle) from 450 s on
        assert any(s <= 77.5 + 100 * k and abs(e - (102.5 + 100 * k)) <= 0.5 for s, e in greens), (k, greens)
    assert j.kept[-1] is None  # the file goes
    assert j.inter.kept is None
    (dropped,) = j.points("coordination.dropped")
    assert dropped.value == "expired"
    assert j.emu.monitor.faults == []


def test_an_expired_kept_plan_is_dropped_on_load(tmp_path: Path) -> None:
    j = Junction()
    keeper = PlanKeeper(tmp_path, j.ix.name)
    plan = KeptPlan(j.ix.name, 100.0, 87.0, 0.0, dict(j.ix.plans[1].splits), until_s=400.0, command_id="c1",
                    config=config_fingerprint(j.ix))  # fmt: skip
    keeper.save(plan)
    assert keeper.load(j.ix, None).plan == plan  # no shared time: cannot be judged, kept
    loaded = keeper.load(j.ix, 400.0)
    assert (loaded.plan, loaded.dropped) == (None, "expired")
    assert not keeper.path.exists()


def test_a_plan_kept_for_another_config_is_dropped(tmp_path: Path) -> None:
    ix = coordinated()
    keeper = PlanKeeper(tmp_path, ix.name)
    keeper.save(KeptPlan(ix.name, 100.0, 87.0, 0.0, dict(ix.plans[1].splits), command_id="c1",
                         config=config_fingerprint(ix)))  # fmt: skip
    raw = ix.model_dump(by_alias=True)
    raw["stages"][2]["min_green_s"] = 12  # the coordinated stage's minimum changed since
    other = IntersectionConfig.model_validate(raw)
    assert config_fingerprint(other) != config_fingerprint(ix)
    raw = ix.model_dump(by_alias=True)
    raw["counts_s"] = 30  # what the plan was not checked against does not matter
    assert config_fingerprint(IntersectionConfig.model_validate(raw)) == config_fingerprint(ix)
    loaded = keeper.load(other, 0.0)
    assert (loaded.plan, loaded.dropped) == (None, "other_config")
    assert "c1" in loaded.detail
    assert not keeper.path.exists()


def _source(tmp_path: Path, ix: IntersectionConfig | None = None) -> TrafficSource:
    ix = ix or coordinated()
    emu = ControllerEmulator(program_card(ix), SimClock(0.0), watchdog_s=0.5)
    out = ModbusSignalController(tuple(g.name for g in ix.groups), DirectLink(emu))
    src = TrafficSource(ix, TZ, output=out, state_dir=tmp_path)
    src.wall = Clock(override=ClockQuality.SYNCED)
    return src


def test_the_source_restores_a_valid_plan_and_says_why_it_drops_one(tmp_path: Path) -> None:
    src = _source(tmp_path)
    assert src.keeper is not None
    splits = dict(src.ix.plans[1].splits)
    good = KeptPlan(src.ix.name, 100.0, 87.0, 0.0, splits, command_id="c1", config=config_fingerprint(src.ix))
    src.keeper.save(good)
    assert src.restore(Metrics()) == good
    assert src.intersection.kept == good
    assert src.intersection.restored
    assert src.drain() == []
    # Past its validity by the wall clock: dropped, one event naming the command.
    src = _source(tmp_path)
    assert src.keeper is not None
    src.keeper.save(dataclasses.replace(good, until_s=time.time() - 60))
    assert src.restore(Metrics()) is None
    (event,) = src.drain()
    assert (event.point, event.value) == ("coordination.dropped", "expired")
    assert event.meta is not None
    assert "c1" in event.meta["detail"]
    # The right config but a split below a minimum (edited by hand): the command's checks refuse it.
    src = _source(tmp_path)
    assert src.keeper is not None
    src.keeper.save(dataclasses.replace(good, splits={**splits, "ew": 2.0}))
    assert src.restore(Metrics()) is None
    (event,) = src.drain()
    assert (event.point, event.value) == ("coordination.dropped", "invalid")
    assert src.intersection.kept is None
    src.flush_kept()
    assert not src.keeper.path.exists()


def test_a_corrupt_state_file_is_counted_set_aside_and_ignored(tmp_path: Path) -> None:
    ix = coordinated()
    good = KeptPlan(
        ix.name, 100.0, 87.0, 0.0, dict(ix.plans[1].splits), config=config_fingerprint(ix)
    ).to_json()
    doc = json.loads(good)
    damaged = [
        b"",
        good[: len(good) // 2],
        b"\xff\xfe not json",
        b"[1, 2]",
        json.dumps({**doc, "version": 99}).encode(),
        json.dumps({**doc, "splits": [1, 2]}).encode(),
        json.dumps({**doc, "cycle_s": "long"}).encode(),
        json.dumps({k: v for k, v in doc.items() if k != "start_s"}).encode(),
        json.dumps({**doc, "intersection": "another"}).encode(),
        good.replace(b'"from_s": 0.0', b'"from_s": NaN'),
    ]
    for n, data in enumerate(damaged):
        metrics = Metrics()
        src = _source(tmp_path / str(n), ix)
        assert src.keeper is not None
        src.keeper.path.parent.mkdir(parents=True)
        src.keeper.path.write_bytes(data)
        assert src.restore(metrics) is None, data
        assert metrics.get(CORRUPT_METRIC, {"intersection": ix.name}) == 1, data
        assert not src.keeper.path.exists()
        assert src.keeper.path.with_name(src.keeper.path.name + ".corrupt").read_bytes() == data
        (event,) = src.drain()
        assert (event.point, event.value) == ("coordination.dropped", "corrupt"), data
        assert src.intersection.kept is None


def test_the_router_hands_the_whole_command_to_a_handler_that_keeps_it() -> None:
    seen: list[IncomingCommand] = []

    class Handler:
        def apply_command(self, body: dict[str, object]) -> CommandOutcome:
            raise AssertionError("the router must call apply_incoming")

        def apply_incoming(self, cmd: IncomingCommand) -> CommandOutcome:
            seen.append(cmd)
            return CommandOutcome.accepted()

    router = CommandRouter("site", Clock(override=ClockQuality.SYNCED))
    router.register("traffic", Handler())
    now = time.time()
    cmd = IncomingCommand("cmd-9", "site", "traffic", now, now + 60, {"action": "status"})
    assert router.dispatch(cmd).outcome == "accepted"
    assert seen == [cmd]
    router.close()


def test_the_plan_is_kept_beside_the_store_unless_the_config_names_a_folder(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "site.yaml"
    path.parent.mkdir()
    doc = yaml.safe_load(SITE.read_text())
    doc["store"] = {"path": str(tmp_path / "lib" / "store.db")}
    path.write_text(yaml.safe_dump(doc))
    (src,), _ = traffic_sources(load_config(path))
    assert src.keeper is not None
    assert src.keeper.path == tmp_path / "lib" / "traffic" / "ltt-ngt.coordination.json"
    doc["traffic"]["state_dir"] = "keep"  # relative to the config file's folder
    path.write_text(yaml.safe_dump(doc))
    (src,), _ = traffic_sources(load_config(path))
    assert src.keeper is not None
    assert src.keeper.path == tmp_path / "etc" / "keep" / "ltt-ngt.coordination.json"


def test_a_coordinate_body_with_a_bool_nan_or_infinity_for_a_time_is_refused() -> None:
    """``true`` is an int to Python and JSON decoders pass NaN/Infinity: none of them is a time."""
    from control.traffic.commands import check_coordinate

    ix = coordinated()
    good = _body(ix)
    assert isinstance(check_coordinate(ix, good), KeptPlan)
    for field in ("start_s", "from_s", "until_s", "cycle_s"):
        for bad in (True, False, float("nan"), float("inf"), float("-inf")):
            out = check_coordinate(ix, {**good, field: bad})
            assert isinstance(out, CommandOutcome), (field, bad)
            assert out.outcome == "refused", (field, bad)
