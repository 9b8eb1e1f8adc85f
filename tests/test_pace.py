"""kernel/pace.py: the agent polls more slowly only when it is starved and the centre acknowledges
less than it accepts; an outage or a slow centre with CPU to spare never slows acquisition."""

from __future__ import annotations

import pytest

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


# A shared machine: the event loop's timers stay on time (IDLE lag) while the agent's threads queue
# for a core, 1.2 s per second (what bench_ladder.py measured past the ceiling).
WAITING, SPARE = 1.2, 0.1


def test_threads_waiting_for_a_core_stretch_a_growing_backlog_with_the_loop_on_time() -> None:
    pace = Pace()
    # 5 s of backlog (below high_s), 64,000/s accepted against 59,000/s acknowledged.
    for _ in range(6):
        pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch == pytest.approx(1.25**2)  # a step every third: each left to show first
    spare = Pace()
    for _ in range(6):
        spare.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=SPARE)
    assert spare.stretch == 1  # the same backlog, CPU to spare: a slow centre, the store buffers
    unknown = Pace()
    for _ in range(6):  # no schedstat on this system: the loop's lag alone decides
        unknown.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=None)
    assert unknown.stretch == 1


def test_growth_must_last_and_show_above_the_low_mark() -> None:
    pace = Pace(growing_steps=3)
    pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch == 1  # two steps of growth: not yet
    pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch == 1.25  # the third
    pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch == 1.25  # the step is left to show in the rates
    pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch == pytest.approx(1.25**2)  # still growing three steps later: the next
    steady = Pace()
    for _ in range(10):  # starved, 5 s of backlog, but what leaves matches what comes in: held
        steady.update(300_000, 60_000, 59_500, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert steady.stretch == 1
    small = Pace()
    for _ in range(10):  # growing, but 1 s of backlog: the batches in flight, not an overload
        small.update(59_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert small.stretch == 1


def test_an_outage_resets_a_stretch_won_by_waiting_for_a_core() -> None:
    pace = Pace()
    for _ in range(6):
        pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch > 1
    pace.update(300_000, 64_000, 59_000, connected=False, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch == 1
    pace.update(300_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch == 1  # the growth is counted again from the outage's end


def test_a_starved_agent_relaxes_while_its_backlog_drains_and_holds_while_it_keeps_up() -> None:
    pace = Pace()
    for _ in range(10):  # 20 s of backlog, not shrinking: a step every step
        pace.update(1_200_000, 64_000, 59_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    high = pace.stretch
    assert high == pytest.approx(1.25**10)
    pace.update(600_000, 20_000, 65_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    # Stretched: 20,000/s in, 65,000/s out, the backlog drains: the smoothed rates (50,800 in, 60,800
    # out) say by how much, 1.2x, and the polls come back by as much.
    assert pace.stretch == pytest.approx(high * 50_800 / 60_800)
    for _ in range(2):
        pace.update(600_000, 20_000, 65_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch < high / 1.25
    for _ in range(10):  # caught up (1 s of backlog), still starved, intake a little above delivery
        pace.update(65_000, 66_000, 65_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    held = pace.stretch  # once the smoothed rates say the backlog no longer shrinks: held
    assert held > 1
    for _ in range(10):
        pace.update(65_000, 66_000, 65_000, connected=True, loop_lag_s=IDLE, cpu_wait=WAITING)
    assert pace.stretch == held
    for _ in range(30):  # the machine quiets down: caught up and not starved, back to as configured
        pace.update(20_000, 65_000, 65_000, connected=True, loop_lag_s=IDLE, cpu_wait=SPARE)
    assert pace.stretch == 1
