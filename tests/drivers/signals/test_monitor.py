"""The emulated cabinet's conflict monitor (MMU) on its own: every rule at its boundary, latching, reset.

The card has two conflicting vehicle channels ``a`` and ``b``, a left turn ``c`` that yields to ``a``
(a permissive pair) and a crosswalk ``p`` that every vehicle channel crosses. Its minimum times differ from one another so
that a rule timed against the wrong minimum is caught.
"""

from __future__ import annotations

import pytest

from drivers.signals.monitor import GREEN, GREEN_YIELD, RED, YELLOW, ConflictMonitor, ProgramCard

A, B, C, P = range(4)
T0 = 100.0


def card() -> ProgramCard:
    """a-b, a-c and every vehicle-p pair conflict; c yields to a; p is a crosswalk with a 6 s crossing."""
    foes = {(A, B), (A, C), (A, P), (B, P), (C, P)}
    foe = tuple(tuple((i, j) in foes or (j, i) in foes for j in range(4)) for i in range(4))
    return ProgramCard(
        channels=("a", "b", "c", "p"),
        foe=foe,
        yields_to={(A, C): C, (C, A): C},
        pedestrian=(False, False, False, True),
        crossing_s=(0.0, 0.0, 0.0, 6.0),
        min_yellow_s=3.0,
        min_red_clear_s=2.0,
        min_green_s=5.0,
        min_walk_s=4.0,
        min_ped_clear_s=3.5,
    )


def codes(**shown: int) -> list[int]:
    """All red except the channels named."""
    out = [RED] * 4
    for name, code in shown.items():
        out["abcp".index(name)] = code
    return out


@pytest.fixture
def mon() -> ConflictMonitor:
    m = ConflictMonitor(card())
    m.restart(T0 - 20.0)  # every clearance long over by T0
    return m


def cycle_a(mon: ConflictMonitor, green: float = 5.0, yellow: float = 3.0) -> float:
    """Run ``a`` green, yellow, red from T0 with legal times; returns when it turned red."""
    assert mon.observe(codes(a=GREEN), T0) is None
    assert mon.observe(codes(a=YELLOW), T0 + green) is None
    assert mon.observe(codes(), T0 + green + yellow) is None
    return T0 + green + yellow


def test_a_legal_cycle_raises_nothing_and_records_what_is_shown(mon: ConflictMonitor) -> None:
    red = cycle_a(mon)
    assert mon.observe(codes(b=GREEN), red + 2.0) is None
    assert mon.codes == codes(b=GREEN)
    assert mon.fault is None
    assert mon.faults == []


def test_green_straight_to_red_trips_and_the_fault_latches(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    assert mon.observe(codes(), T0 + 10) == "yellow_skipped a"
    assert mon.fault == "yellow_skipped a"
    # Latched: a later legal state is not looked at, and the fault is reported once.
    assert mon.observe(codes(b=GREEN), T0 + 60) == "yellow_skipped a"
    assert mon.codes == codes()
    assert mon.faults == ["yellow_skipped a"]


def test_permissive_green_straight_to_red_trips(mon: ConflictMonitor) -> None:
    mon.observe(codes(c=GREEN_YIELD), T0)
    assert mon.observe(codes(), T0 + 10) == "yellow_skipped c"


def test_yellow_back_to_green_trips(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    mon.observe(codes(a=YELLOW), T0 + 5)
    assert mon.observe(codes(a=GREEN), T0 + 6) == "yellow_to_green a"


def test_yellow_back_to_permissive_green_trips(mon: ConflictMonitor) -> None:
    mon.observe(codes(c=GREEN_YIELD), T0)
    mon.observe(codes(c=YELLOW), T0 + 5)
    assert mon.observe(codes(c=GREEN_YIELD), T0 + 6) == "yellow_to_green c"


def test_vehicle_yellow_is_timed_against_the_minimum_yellow(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    mon.observe(codes(a=YELLOW), T0 + 5)
    assert mon.observe(codes(), T0 + 5 + 2.99) == "short_yellow a 2.99s"


def test_vehicle_yellow_of_exactly_the_minimum_passes(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    mon.observe(codes(a=YELLOW), T0 + 5)
    assert mon.observe(codes(), T0 + 5 + 3.0) is None


def test_pedestrian_clearance_is_timed_against_its_own_minimum(mon: ConflictMonitor) -> None:
    """3.2 s of flashing don't walk is a long enough vehicle yellow but a short pedestrian clearance."""
    mon.observe(codes(p=GREEN), T0)
    mon.observe(codes(p=YELLOW), T0 + 4)
    assert mon.observe(codes(), T0 + 4 + 3.2) == "short_yellow p 3.20s"


def test_pedestrian_clearance_of_exactly_its_minimum_passes(mon: ConflictMonitor) -> None:
    mon.observe(codes(p=GREEN), T0)
    mon.observe(codes(p=YELLOW), T0 + 4)
    assert mon.observe(codes(), T0 + 4 + 3.5) is None


def test_short_vehicle_green_trips(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    assert mon.observe(codes(a=YELLOW), T0 + 4.99) == "short_green a"


def test_vehicle_green_of_exactly_the_minimum_passes(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    assert mon.observe(codes(a=YELLOW), T0 + 5.0) is None


def test_walk_is_timed_against_the_minimum_walk(mon: ConflictMonitor) -> None:
    """4 s is a full walk but would be a short vehicle green; 3.99 s is a short walk."""
    mon.observe(codes(p=GREEN), T0)
    assert mon.observe(codes(p=YELLOW), T0 + 4.0) is None
    mon.restart(T0 - 20.0)
    mon.observe(codes(p=GREEN), T0)
    assert mon.observe(codes(p=YELLOW), T0 + 3.99) == "short_green p"


def test_short_permissive_green_trips(mon: ConflictMonitor) -> None:
    mon.observe(codes(c=GREEN_YIELD), T0)
    assert mon.observe(codes(c=YELLOW), T0 + 4.99) == "short_green c"


def test_minimum_green_runs_from_the_first_green_through_a_change_to_protected(mon: ConflictMonitor) -> None:
    """Permissive then protected green is one green: its minimum counts from the permissive start."""
    mon.observe(codes(c=GREEN_YIELD), T0)
    assert mon.observe(codes(c=GREEN), T0 + 3) is None
    assert mon.observe(codes(c=YELLOW), T0 + 5) is None


def test_green_after_a_foe_needs_the_red_clearance(mon: ConflictMonitor) -> None:
    red = cycle_a(mon)
    assert mon.observe(codes(b=GREEN), red + 1.99) == "red_clearance b after a"


def test_green_while_a_foe_is_still_yellow_is_a_red_clearance_fault(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    mon.observe(codes(a=YELLOW), T0 + 5)
    assert mon.observe(codes(a=YELLOW, b=GREEN), T0 + 30) == "red_clearance b after a"


def test_protected_green_needs_the_clearance_of_the_stream_it_yielded_to(mon: ConflictMonitor) -> None:
    """c may run permissive beside a; turning protected while a still moves is a clearance fault."""
    mon.observe(codes(a=GREEN), T0)
    assert mon.observe(codes(a=GREEN, c=GREEN_YIELD), T0 + 1) is None
    assert mon.observe(codes(a=GREEN, c=GREEN), T0 + 2) == "red_clearance c after a"


def test_the_stream_yielded_to_may_start_beside_a_permissive_green(mon: ConflictMonitor) -> None:
    mon.observe(codes(c=GREEN_YIELD), T0)
    assert mon.observe(codes(a=GREEN, c=GREEN_YIELD), T0 + 1) is None


def test_green_across_a_crosswalk_waits_for_its_crossing_time(mon: ConflictMonitor) -> None:
    """Walk ends at 104, red at 107.5, red clearance done at 109.5, but the 6 s crossing at 110."""
    mon.observe(codes(p=GREEN), T0)
    mon.observe(codes(p=YELLOW), T0 + 4)
    mon.observe(codes(), T0 + 7.5)
    assert mon.observe(codes(b=GREEN), T0 + 9.99) == "ped_clearance b after p"
    mon.restart(T0 - 20.0)
    mon.observe(codes(p=GREEN), T0)
    mon.observe(codes(p=YELLOW), T0 + 4)
    mon.observe(codes(), T0 + 7.5)
    assert mon.observe(codes(b=GREEN), T0 + 10.0) is None


def test_a_vehicle_yellow_does_not_end_a_walk(mon: ConflictMonitor) -> None:
    """Only a crosswalk's own walk restarts its crossing time; a vehicle channel has none."""
    mon.observe(codes(b=GREEN), T0)
    mon.observe(codes(b=YELLOW), T0 + 5)
    assert mon.walk_end[B] == T0 - 20.0


def test_conflicting_channels_active_together_trip(mon: ConflictMonitor) -> None:
    """The monitor does not time red to yellow, so only the conflict check sees this."""
    mon.observe(codes(a=GREEN), T0)
    assert mon.observe(codes(a=GREEN, b=YELLOW), T0 + 1) == "conflict a b"


def test_a_yielding_channel_in_protected_green_beside_its_foe_is_a_conflict(mon: ConflictMonitor) -> None:
    mon.observe(codes(c=GREEN), T0)
    assert mon.observe(codes(a=YELLOW, c=GREEN), T0 + 1) == "conflict a c"


def test_a_permissive_pair_may_be_active_together(mon: ConflictMonitor) -> None:
    mon.observe(codes(c=GREEN_YIELD), T0)
    assert mon.observe(codes(a=YELLOW, c=GREEN_YIELD), T0 + 1) is None


def test_the_first_channel_in_order_names_the_fault() -> None:
    m = ConflictMonitor(card())
    m.restart(0.0)
    m.observe(codes(a=GREEN, c=GREEN_YIELD), 30.0)
    assert m.observe(codes(), 40.0) == "yellow_skipped a"


def test_a_fresh_monitor_times_its_clearances_from_time_zero() -> None:
    """Powered up all red at time zero: red clearance from 0, and every crosswalk may be in use."""
    m = ConflictMonitor(card())
    assert m.observe(codes(p=GREEN), 1.99) == "red_clearance p after a"
    m = ConflictMonitor(card())
    assert m.observe(codes(p=GREEN), 2.0) is None
    m = ConflictMonitor(card())
    assert m.observe(codes(b=GREEN), 5.99) == "ped_clearance b after p"
    m = ConflictMonitor(card())
    assert m.observe(codes(b=GREEN), 6.0) is None


def test_restart_clears_the_fault_and_times_every_clearance_from_the_reset(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    mon.observe(codes(), T0 + 10)
    mon.restart(T0 + 20)
    assert mon.fault is None
    assert mon.codes == codes()
    assert mon.changed == [T0 + 20] * 4
    assert mon.observe(codes(a=GREEN), T0 + 21.99) == "red_clearance a after b"
    mon.restart(T0 + 30)
    assert mon.observe(codes(b=GREEN), T0 + 35.99) == "ped_clearance b after p"
    mon.restart(T0 + 40)
    assert mon.observe(codes(b=GREEN), T0 + 46) is None
    assert mon.faults == ["yellow_skipped a", "red_clearance a after b", "ped_clearance b after p"]


def test_what_is_recorded_is_a_copy_of_the_state_shown(mon: ConflictMonitor) -> None:
    shown = codes(a=GREEN)
    mon.observe(shown, T0)
    shown[A] = RED
    assert mon.codes == codes(a=GREEN)
    assert mon.changed[A] == T0
    assert mon.green_at[A] == T0


def test_a_permissive_green_may_end_while_the_stream_it_yields_to_still_moves(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    mon.observe(codes(a=GREEN, c=GREEN_YIELD), T0 + 1)
    assert mon.observe(codes(a=GREEN, c=YELLOW), T0 + 6) is None


def test_a_permissive_green_still_waits_for_the_other_foes_clearance(mon: ConflictMonitor) -> None:
    """c may run beside a, but not into a crosswalk still being cleared: every foe is looked at."""
    mon.observe(codes(p=GREEN), T0)
    mon.observe(codes(p=YELLOW), T0 + 7)
    mon.observe(codes(), T0 + 10.5)
    assert mon.observe(codes(c=GREEN_YIELD), T0 + 12.5) == "ped_clearance c after p"


def test_a_conflict_between_later_channels_is_found(mon: ConflictMonitor) -> None:
    mon.observe(codes(p=GREEN), T0)
    assert mon.observe(codes(b=YELLOW, p=GREEN), T0 + 1) == "conflict b p"


def test_the_first_conflicting_pair_in_channel_order_is_named(mon: ConflictMonitor) -> None:
    mon.observe(codes(a=GREEN), T0)
    assert mon.observe(codes(a=GREEN, b=YELLOW, p=YELLOW), T0 + 1) == "conflict a b"


# The monitor allows 1 microsecond for floating-point rounding: 1 us short of a minimum passes.


def test_a_yellow_one_microsecond_short_passes() -> None:
    m = ConflictMonitor(card())
    m.restart(-20.0)
    m.observe(codes(a=GREEN), -5.0)
    m.observe(codes(a=YELLOW), 0.0)
    assert m.observe(codes(), 3.0 - 1e-6) is None


def test_a_green_one_microsecond_short_passes() -> None:
    m = ConflictMonitor(card())
    m.restart(-20.0)
    m.observe(codes(a=GREEN), 0.0)
    assert m.observe(codes(a=YELLOW), 5.0 - 1e-6) is None


def test_a_red_clearance_one_microsecond_short_passes() -> None:
    m = ConflictMonitor(card())
    m.restart(-20.0)
    m.observe(codes(b=GREEN), -8.0)
    m.observe(codes(b=YELLOW), -3.0)
    m.observe(codes(), 0.0)
    assert m.observe(codes(a=GREEN), 2.0 - 1e-6) is None


def test_a_crossing_one_microsecond_short_passes() -> None:
    m = ConflictMonitor(card())
    m.restart(-20.0)
    m.observe(codes(p=GREEN), -7.0)
    m.observe(codes(p=YELLOW), 0.0)
    m.observe(codes(), 3.5)
    assert m.observe(codes(b=GREEN), 6.0 - 1e-6) is None
