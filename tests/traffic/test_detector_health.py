"""Detector health: stuck-on, stuck-off and chattering loops are failed and left out (max recall)."""

from __future__ import annotations

from control.traffic.config import DetectorConfig
from control.traffic.detectors import DetectorBoard
from tests.traffic.helpers import SimClock

DETS = [
    DetectorConfig(name="a", group="ns"),
    DetectorConfig(name="b", group="ew"),
    DetectorConfig(name="c", group="ns_left"),
]


def _board() -> tuple[DetectorBoard, SimClock]:
    clock = SimClock(0.0)
    return DetectorBoard(DETS, clock), clock


def _pulse(board: DetectorBoard, clock: SimClock, name: str, on_s: float = 0.5, off_s: float = 2.5) -> None:
    board.loop(name, True)
    clock.t += on_s
    board.loop(name, False)
    clock.t += off_s


def test_a_loop_occupied_too_long_is_stuck_on_and_its_group_runs_to_max() -> None:
    board, clock = _board()
    board.loop("a", True)
    for _ in range(239):
        clock.t += 1.0
        board.loop("a", True)
        assert board.check_health() == {}
    assert board.gap(["ns"]) == 0.0
    clock.t += 1.0
    assert board.check_health() == {"a": "stuck_on"}
    assert not board.has_loops(["ns"])  # no gap-out, demand always: max recall
    board.loop("a", False)
    assert board.check_health() == {"a": None}
    assert board.has_loops(["ns"])


def test_a_loop_silent_while_the_others_count_is_stuck_off_and_recovers_on_a_vehicle() -> None:
    board, clock = _board()
    _pulse(board, clock, "c")
    while clock.t < 700:
        _pulse(board, clock, "a")
        _pulse(board, clock, "b")
        health = board.check_health()
        if health:
            break
    assert health == {"c": "stuck_off"}
    assert clock.t >= DetectorBoard.STUCK_OFF_S
    assert not board.has_loops(["ns_left"])
    _pulse(board, clock, "c")
    assert board.check_health() == {"c": None}


def test_a_quiet_left_bay_is_judged_by_its_own_rate_and_still_fails_when_dead() -> None:
    """A left-bay loop seeing one vehicle in 50 while the through loops stream (about 30 veh/h):
    a 700 s silence is normal for it (the old rule, 600 s and 100 others, flagged it), yet once it
    has missed about eight of its own vehicles it is stuck_off."""
    board, clock = _board()
    for k in range(600):  # 1800 s of traffic, "c" every 50th pair of through actuations
        if k % 25 == 0:
            _pulse(board, clock, "c")
        _pulse(board, clock, "a")
        _pulse(board, clock, "b")
        assert board.check_health() == {}
    silent_from = clock.t
    while clock.t - silent_from < 700:
        _pulse(board, clock, "a")
        _pulse(board, clock, "b")
        assert board.check_health() == {}, clock.t - silent_from
    health: dict[str, str | None] = {}
    while not health and clock.t - silent_from < 1200:
        _pulse(board, clock, "a")
        _pulse(board, clock, "b")
        health = board.check_health()
    assert health == {"c": "stuck_off"}


def test_a_quiet_junction_at_night_fails_no_loop() -> None:
    board, clock = _board()
    for _ in range(3600):
        clock.t += 1.0
        assert board.check_health() == {}


def test_a_chattering_loop_is_failed_until_a_quiet_minute() -> None:
    board, clock = _board()
    for _ in range(61):
        _pulse(board, clock, "b", 0.1, 0.1)
    assert board.check_health() == {"b": "chattering"}
    assert not board.has_loops(["ew"])
    clock.t += 30
    assert board.check_health() == {}
    clock.t += 31
    assert board.check_health() == {"b": None}


def test_gap_ignores_a_failed_loop() -> None:
    board, clock = _board()
    board.loop("a", True)
    clock.t += DetectorBoard.STUCK_ON_S
    board.check_health()
    assert board.gap(["ns"]) == float("inf")
