"""Loop counts as telemetry: each loop's vehicles per period from a detector board's actuations."""

from __future__ import annotations

from control.traffic.counts import CountReporter, loop_of
from control.traffic.detectors import DetectorBoard
from tests.traffic.helpers import SITE


def test_each_period_reports_every_loops_vehicles_in_it() -> None:
    from agent.config import load_config

    ix = load_config(SITE).traffic.intersections[0]  # type: ignore[union-attr]
    loops = [d.name for d in ix.detectors if d.kind == "loop"]
    assert len(loops) >= 2
    now = [0.0]
    board = DetectorBoard(ix.detectors, lambda: now[0])
    rep = CountReporter(ix.name, 60.0, 0.0, wall=lambda: 1.7e9 + now[0])
    for i in range(5):  # five vehicles over the first loop
        now[0] = 1.0 + i
        board.loop(loops[0], True)
        now[0] += 0.5
        board.loop(loops[0], False)
    assert rep.poll(30.0, board.actuations()) == []  # the period is not over
    first = rep.poll(60.0, board.actuations())
    by_loop = {loop_of(r.point): r for r in first}
    assert set(by_loop) == set(loops)
    assert by_loop[loops[0]].value == 5
    assert by_loop[loops[1]].value == 0
    assert by_loop[loops[0]].device == ix.name
    assert by_loop[loops[0]].meta == {"period_s": "60.0"}
    now[0] = 70.0
    board.loop(loops[1], True)
    second = {loop_of(r.point): r.value for r in rep.poll(121.0, board.actuations())}
    assert second[loops[0]] == 0
    assert second[loops[1]] == 1


def test_count_points_name_their_loop() -> None:
    assert loop_of("detector.w_through_1.count") == "w_through_1"
    assert loop_of("detector..count") is None
    assert loop_of("signal.state") is None
