"""Tracker geometry: line crossings, zones, queue length, and track holding on still frames."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.camera.detectors import Detection
from models.camera.tracker import CountLine, Tracker, Zone

LINE = CountLine("stop", (0.5, 0.0), (0.5, 1.0), ("east", "west"))
SIZE = (1000, 1000)


def _box(x: float, y: float, half: float = 20.0) -> Detection:
    return Detection((x - half, y - half, x + half, y + half), 1.0, "car")


@given(
    y=st.floats(0.05, 0.95),
    x0=st.floats(0.05, 0.49),
    x1=st.floats(0.51, 0.95),
    steps=st.integers(2, 30),
    eastward=st.booleans(),
)
def test_a_straight_pass_counts_once_in_its_direction(
    y: float, x0: float, x1: float, steps: int, eastward: bool
) -> None:
    tracker = Tracker([LINE], max_distance=1.0)
    xs = [x0 + (x1 - x0) * i / steps for i in range(steps + 1)]
    if not eastward:
        xs.reverse()
    crossings = []
    for i, x in enumerate(xs):
        crossings += tracker.update([_box(x * 1000, y * 1000)], i * 0.04, SIZE).crossings
    assert [c.direction for c in crossings] == ["east" if eastward else "west"]


def test_crossing_beyond_the_segment_does_not_count() -> None:
    short = CountLine("short", (0.5, 0.0), (0.5, 0.4))
    assert short.crossing((0.4, 0.6), (0.6, 0.6)) is None
    assert short.crossing((0.4, 0.2), (0.6, 0.2)) == "forward"
    assert short.crossing((0.6, 0.2), (0.4, 0.2)) == "backward"


def test_step_landing_exactly_on_the_line_counts_once() -> None:
    tracker = Tracker([LINE], max_distance=1.0)
    got = []
    for i, x in enumerate([400.0, 450.0, 500.0, 550.0, 600.0]):
        got += tracker.update([_box(x, 500.0)], i * 0.04, SIZE).crossings
    assert [c.direction for c in got] == ["east"]


def test_zone_occupancy_and_queue() -> None:
    zone = Zone("approach", ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)), queue_speed=0.05)
    tracker = Tracker(zones=[zone], max_missed_s=5.0)
    state = None
    for i in range(30):
        t = i * 0.1
        moving = _box(100 + 30 * i, 800)  # 0.3 frame widths per second, leaves the zone
        stopped_a = _box(200, 200)
        stopped_b = _box(300, 200)
        outside = _box(800, 500)
        state = tracker.update([moving, stopped_a, stopped_b, outside], t, SIZE)
        if i == 5:
            assert state.occupancy["approach"] == 3
            assert state.queue["approach"] == 2
    assert state is not None
    assert state.occupancy["approach"] == 2  # the moving car has left
    assert state.queue["approach"] == 2
    held = tracker.hold(10.0)
    assert held.occupancy["approach"] == 2  # nothing moved: stopped cars stay counted


def test_lost_tracks_expire() -> None:
    tracker = Tracker(max_missed_s=0.5)
    tracker.update([_box(100, 100)], 0.0, SIZE)
    assert len(tracker.tracks) == 1
    tracker.update([], 0.3, SIZE)
    assert len(tracker.tracks) == 1
    tracker.update([], 0.9, SIZE)
    assert tracker.tracks == {}


def test_zone_polygon_contains() -> None:
    tri = Zone("tri", ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    assert tri.contains((0.2, 0.2))
    assert not tri.contains((0.8, 0.8))


def test_a_lost_track_stays_while_its_box_still_differs_from_the_road() -> None:
    zone = Zone("q", ((0.0, 0.0), (0.6, 0.0), (0.6, 1.0), (0.0, 1.0)))
    tracker = Tracker(zones=[zone], max_missed_s=0.5)
    for i in range(3):  # two vehicles drive in and stop side by side
        tracker.update([_box(100 + 10 * i, 500), _box(300 + 10 * i, 500)], i * 0.1, SIZE)
    still = {1}  # vehicle 1's pixels still differ from the road; vehicle 2 has gone
    state = None
    for i in range(3, 60):  # 5.7 s: each frame the detector finds only vehicle 2's old place, empty
        state = tracker.update([], i * 0.1, SIZE, present=lambda box: box[0] < 200 and bool(still))
    assert state is not None
    assert state.occupancy["q"] == 1
    assert state.queue["q"] == 1
    still.clear()
    for i in range(60, 67):
        state = tracker.update([], i * 0.1, SIZE, present=lambda box: False)
    assert state.occupancy["q"] == 0
