"""kernel/pace.py: the agent polls more slowly only when it is starved and the centre acknowledges
less than it accepts; an outage or a slow centre with CPU to spare never slows acquisition."""

from __future__ import annotations

from kernel.pace import Pace

STARVED, IDLE = 0.05, 0.001


def test_an_overloaded_agent_stretches_its_polls_up_to_the_limit_then_comes_back() -> None:
    pace = Pace(high_s=10, low_s=3, max_stretch=8)
    # 50,000 waiting, 2,000/s acknowledged: 25 s to drain, and the event loop runs late.
    for _ in range(30):
        pace.update(50_000, 6_000, 2_000, connected=True, loop_lag_s=STARVED)
    assert pace.stretch == 8
    pace.update(10_000, 2_000, 2_000, connected=True, loop_lag_s=STARVED)  # 5 s: between the marks, held
    assert pace.stretch == 8
    for _ in range(40):
        pace.update(1_000, 2_000, 2_000, connected=True, loop_lag_s=IDLE)  # 0.5 s: relax
    assert pace.stretch == 1


def test_outages_and_a_slow_centre_never_slow_acquisition() -> None:
    pace = Pace()
    pace.update(500_000, 6_000, 2_000, connected=False, loop_lag_s=STARVED)
    assert pace.stretch == 1  # broker unreachable: the store buffers
    slow = Pace()
    for _ in range(10):
        slow.update(500_000, 6_000, 2_000, connected=True, loop_lag_s=IDLE)
    assert slow.stretch == 1  # slow centre, agent not starved
    starved = Pace()
    for _ in range(5):
        starved.update(500_000, 6_000, 2_000, connected=True, loop_lag_s=STARVED)
    assert starved.stretch > 2
    for _ in range(6):  # the centre stops acknowledging: once that shows through the smoothing, no stretch
        starved.update(500_000, 6_000, 0, connected=True, loop_lag_s=STARVED)
    assert starved.stretch == 1
    starved.update(500_000, 6_000, 2_000, connected=True, loop_lag_s=STARVED)
    starved.update(500_000, 6_000, 2_000, connected=False, loop_lag_s=STARVED)
    assert starved.stretch == 1  # an outage ends any stretch at once


def test_one_step_without_acks_does_not_undo_the_stretch() -> None:
    pace = Pace()
    for _ in range(8):
        pace.update(100_000, 6_000, 3_000, connected=True, loop_lag_s=STARVED)
    before = pace.stretch
    pace.update(100_000, 6_000, 0, connected=True, loop_lag_s=STARVED)  # acks come in bursts
    assert pace.stretch >= before


def test_a_shrinking_backlog_brings_the_polls_back_until_intake_matches_delivery() -> None:
    pace = Pace()
    for _ in range(12):
        pace.update(200_000, 12_000, 6_000, connected=True, loop_lag_s=STARVED)
    high = pace.stretch
    assert high > 4
    for _ in range(5):  # stretched: 3,000/s taken in, 6,000/s leaving; still 20 s of backlog
        pace.update(120_000, 3_000, 6_000, connected=True, loop_lag_s=STARVED)
    assert pace.stretch < high
