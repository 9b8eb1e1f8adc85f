"""Remote overrides and profile switches: applied, refused with reasons, expiring, surviving restarts."""

from __future__ import annotations

import asyncio
import json

from control.lighting.config import LightingConfig
from kernel.readings import Priority
from tests.lighting.conftest import duty, lighting_dict, local_ts, make_controller, relay

NIGHT = local_ts(2026, 3, 10, 23, 0)  # standard profile: 70 %
DAY = local_ts(2026, 3, 11, 13, 0)


def step(ctl, ts):
    return asyncio.run(ctl.step(ts, ts))


def cfg(**extra) -> LightingConfig:
    return LightingConfig.model_validate(lighting_dict(**extra))


def test_override_applies_then_expires(pins, tmp_path):
    ctl = make_controller(cfg(), pins, tmp_path / "state.json")
    step(ctl, NIGHT)
    assert duty(pins, 18) == 70
    out = ctl.apply_command(
        {"action": "override", "circuit": "c1", "level": 100, "duration_s": 1800, "id": "op-7"}, NIGHT
    )
    assert out.outcome == "accepted"
    assert out.reason.startswith("override c1 at 100 % until 2026-03-10T16:30:00Z")
    assert ctl.state.overrides["c1"].command_id == "op-7"
    readings = step(ctl, NIGHT + 1)
    assert duty(pins, 18) == 100
    assert duty(pins, 23) == 40
    assert any(r.point == "c1.mode" and r.value == "override" for r in readings)
    step(ctl, NIGHT + 1799)
    assert duty(pins, 18) == 100
    readings = step(ctl, NIGHT + 1800)
    assert duty(pins, 18) == 70
    expired = [r for r in readings if r.point == "c1.override"]
    assert expired
    assert expired[0].value == "expired"
    assert expired[0].priority == Priority.EVENT
    assert json.loads((tmp_path / "state.json").read_text())["overrides"] == {}


def test_override_off_and_on_by_day(pins):
    ctl = make_controller(cfg(), pins)
    assert (
        ctl.apply_command(
            {"action": "override", "group": "park", "level": 100, "duration_s": 600}, DAY
        ).outcome
        == "accepted"
    )
    step(ctl, DAY)
    assert relay(pins, 22)
    assert not relay(pins, 17)
    assert (
        ctl.apply_command({"action": "override", "all": True, "level": 0, "duration_s": 600}, NIGHT).outcome
        == "accepted"
    )
    step(ctl, NIGHT)
    assert not relay(pins, 17)
    assert not relay(pins, 22)
    out = ctl.apply_command({"action": "clear_override", "all": True}, NIGHT)
    assert out.reason == "override cleared on c1,c2"
    step(ctl, NIGHT + 1)
    assert relay(pins, 17)
    assert duty(pins, 18) == 70


def test_override_survives_restart_until_expiry(pins, tmp_path):
    path = tmp_path / "state.json"
    ctl = make_controller(cfg(), pins, path)
    assert (
        ctl.apply_command(
            {"action": "override", "circuit": "c1", "level": 30, "duration_s": 3600}, NIGHT
        ).outcome
        == "accepted"
    )
    step(ctl, NIGHT)
    assert duty(pins, 18) == 30
    asyncio.run(ctl.close())
    # Reboot 10 minutes later: the new controller reads the state file, not the network.
    ctl2 = make_controller(cfg(), pins, path)
    step(ctl2, NIGHT + 600)
    assert duty(pins, 18) == 30
    step(ctl2, NIGHT + 3600)  # expired at midnight: the standard profile's 00:00 step
    assert duty(pins, 18) == 50
    asyncio.run(ctl2.close())
    # A reboot after expiry runs the schedule straight away.
    ctl3 = make_controller(cfg(), pins, path)
    step(ctl3, NIGHT + 7200)
    assert duty(pins, 18) == 50


def test_expired_override_in_file_is_ignored_after_restart(pins, tmp_path):
    path = tmp_path / "state.json"
    ctl = make_controller(cfg(), pins, path)
    ctl.apply_command({"action": "override", "circuit": "c1", "level": 100, "duration_s": 60}, NIGHT - 3600)
    asyncio.run(ctl.close())
    ctl2 = make_controller(cfg(), pins, path)
    readings = step(ctl2, NIGHT)
    assert duty(pins, 18) == 70
    assert any(r.point == "c1.override" and r.value == "expired" for r in readings)


def test_corrupt_state_file_runs_schedule(pins, tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    ctl = make_controller(cfg(), pins, path)
    step(ctl, NIGHT)
    assert duty(pins, 18) == 70
    assert (tmp_path / "state.json.corrupt").exists()


def test_switch_profile_persists_and_reverts(pins, tmp_path):
    path = tmp_path / "state.json"
    ctl = make_controller(cfg(), pins, path)
    assert (
        ctl.apply_command(
            {"action": "switch_profile", "group": "route-1", "profile": "economy"}, NIGHT
        ).outcome
        == "accepted"
    )
    step(ctl, NIGHT)
    assert duty(pins, 18) == 40
    asyncio.run(ctl.close())
    ctl2 = make_controller(cfg(), pins, path)
    step(ctl2, NIGHT + 60)
    assert duty(pins, 18) == 40
    assert (
        ctl2.apply_command({"action": "switch_profile", "group": "route-1", "profile": None}, NIGHT).outcome
        == "accepted"
    )
    step(ctl2, NIGHT + 120)
    assert duty(pins, 18) == 70


def test_refused_commands_change_nothing(pins, tmp_path):
    path = tmp_path / "state.json"
    ctl = make_controller(cfg(max_override_s=3600), pins, path)
    cases = [
        (
            {"action": "override", "circuit": "c9", "level": 50, "duration_s": 60},
            "circuit: 'c9' is not a circuit",
        ),
        (
            {"action": "override", "group": "nope", "level": 50, "duration_s": 60},
            "group: 'nope' is not a group",
        ),
        (
            {"action": "override", "circuit": "c1", "level": 50, "duration_s": 7200},
            "duration_s: 7200 is not valid",
        ),
        ({"action": "override", "circuit": "c1", "level": -1, "duration_s": 60}, "level: -1 is not valid"),
        ({"action": "override", "circuit": "c1", "level": 50}, "duration_s: required field is missing"),
        (
            {"action": "switch_profile", "group": "park", "profile": "disco"},
            "profile: 'disco' is not a profile",
        ),
        (
            {"action": "override", "circuit": "c1", "level": 50, "duration_s": 60, "extra": 1},
            "extra: unknown field",
        ),
    ]
    for body, problem in cases:
        out = ctl.apply_command(body, NIGHT)
        assert out.outcome == "refused", body
        assert out.reason.startswith(problem), out.reason
    assert ctl.state.overrides == {}
    assert ctl.state.profiles == {}
    assert not path.exists()


def test_override_ignored_while_wall_clock_is_before_it_was_set(pins, tmp_path):
    """A board without RTC reboots at 1970 before NTP: the override set in 2026 must not hold for
    decades of 1970 time; it is ignored until the clock is right again, then resumes until its end."""
    path = tmp_path / "state.json"
    ctl = make_controller(cfg(), pins, path)
    body = {"action": "override", "circuit": "c1", "level": 0, "duration_s": 3600}
    assert ctl.apply_command(body, NIGHT).outcome == "accepted"
    asyncio.run(ctl.close())
    ctl2 = make_controller(cfg(), pins, path)
    step(ctl2, 86400.0 + 15 * 3600)  # 2 January 1970, 22:00 in Bắc Ninh
    assert relay(pins, 17)  # the schedule's night, not the override's "off"
    assert duty(pins, 18) == 70
    assert "c1" in ctl2.state.overrides  # kept, not expired
    step(ctl2, NIGHT + 60)
    assert not relay(pins, 17)  # clock right again: the override holds until its end
