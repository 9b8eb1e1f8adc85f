"""Rig files: validation with path-named problems, scaling of the timeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.rig import load_rig, parse_rig
from kernel.errors import ConfigError

BASE: dict = {
    "rig": "t",
    "duration_s": 120,
    "lines": [{"name": "bus1", "type": "rtu", "baudrate": 9600}, {"name": "gw", "type": "tcp"}],
    "devices": [
        {"kind": "modbus", "name": "th1", "profile": "xy-md02", "line": "bus1", "unit": 1},
        {"kind": "serial", "name": "pm", "sensor": "pms5003"},
    ],
}


def _problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_rig(data, "rig.yaml")
    return info.value.problems


def test_valid_rig_with_every_fault_kind() -> None:
    rig = parse_rig(
        {
            **BASE,
            "faults": [
                {"kind": "dead", "device": "th1", "at_s": 30, "until_s": 90},
                {"kind": "crc", "device": "th1", "rate": 0.05},
                {"kind": "late", "device": "th1", "at_s": 10, "for_s": 5, "delay_s": 3},
                {"kind": "garbage", "device": "pm", "rate": 0.1, "at_s": 5, "for_s": 10},
                {"kind": "exception", "device": "th1", "code": 6, "rate": 0.2, "at_s": 1, "for_s": 2},
                {"kind": "wrong_unit", "device": "th1", "rate": 0.1, "at_s": 1, "for_s": 2},
                {"kind": "truncate", "device": "pm", "rate": 0.1, "at_s": 1, "for_s": 2},
                {"kind": "reboot", "device": "th1", "at_s": 40},
                {"kind": "tcp_drop", "line": "gw", "at_s": 50},
                {"kind": "broker_down", "at_s": 20, "for_s": 60},
                {"kind": "agent_kill", "at_s": 100, "down_s": 2},
                {"kind": "receiver_restart", "at_s": 70, "signal": "SIGKILL"},
            ],
        }
    )
    assert rig.site_id == "hil-t"
    assert rig.faults[1].end(rig.duration_s) == 120  # no end given: until the end of the run
    assert rig.faults[2].end(rig.duration_s) == 15
    assert rig.faults[10].end(rig.duration_s) == 102


def test_problems_are_named_by_path() -> None:
    problems = _problems(
        {
            **BASE,
            "faults": [
                {"kind": "crc", "device": "nope"},
                {"kind": "late", "device": "pm"},
                {"kind": "dead", "device": "th1", "at_s": 130},
                {"kind": "tcp_drop", "line": "bus1", "at_s": 1},
            ],
        }
    )
    assert "faults[0].device: no device named 'nope'" in problems
    assert "faults[1].kind: 'late' applies to Modbus devices, 'pm' is serial" in problems
    assert any(p.startswith("faults[2].at_s: 130.0 is not before the end") for p in problems)
    assert "faults[3].line: 'bus1' is not a tcp line of this rig" in problems


def test_field_errors_name_the_value() -> None:
    data = {**BASE, "faults": [{"kind": "crc", "device": "th1", "rate": 1.5}]}
    data["devices"] = [
        *BASE["devices"],
        {"kind": "modbus", "name": "x", "profile": "xy-md02", "line": "bus1", "unit": 300},
    ]
    problems = _problems(data)
    assert any(p.startswith("faults[0].rate: 1.5 is not valid") for p in problems)
    assert any(p.startswith("devices[2].unit: 300 is not valid") for p in problems)


def test_references_and_clashes() -> None:
    data = {
        **BASE,
        "devices": [
            *BASE["devices"],
            {"kind": "modbus", "name": "th2", "profile": "xy-md02", "line": "bus1", "unit": 1},
            {"kind": "modbus", "name": "th3", "profile": "xy-md02", "line": "bus9", "unit": 2},
            {"kind": "serial", "name": "pm", "sensor": "sds011"},
        ],
    }
    problems = _problems(data)
    assert "devices[2].unit: unit 1 on 'bus1' is taken by 'th1'" in problems
    assert "devices[3].line: no line named 'bus9' (lines: bus1, gw)" in problems
    assert "devices[4].name: 'pm' is used by another device" in problems


def test_unknown_field_and_missing_field() -> None:
    problems = _problems(
        {"rig": "t", "duration_s": 10, "devices": [{"kind": "serial", "name": "a"}], "extra": 1}
    )
    assert "devices[0].sensor: required field is missing" in problems
    assert "extra: unknown field" in problems


def test_scaled_divides_the_timeline_only() -> None:
    rig = parse_rig({**BASE, "faults": [{"kind": "dead", "device": "th1", "at_s": 30, "until_s": 90}]})
    fast = rig.scaled(10)
    assert fast.duration_s == 12
    assert (fast.faults[0].at_s, fast.faults[0].end(fast.duration_s)) == (3, 9)
    assert fast.devices[0] == rig.devices[0]
    assert fast.expect.recovery_s == rig.expect.recovery_s


def test_load_rig_reports_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rig: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_rig(path)
    assert "YAML syntax error" in info.value.problems[0]


def test_shipped_rigs_are_valid() -> None:
    from hil.rigfile import load_any_rig

    rigs = sorted((Path(__file__).resolve().parents[2] / "hil" / "rigs").glob("*.yaml"))
    for path in rigs:
        load_any_rig(path)  # agent rigs and traffic (kind: sumo) rigs


def test_unknown_profile_is_named() -> None:
    data = {**BASE, "devices": [{**BASE["devices"][0], "profile": "no-such-meter"}]}
    problems = _problems(data)
    assert len(problems) == 1
    assert problems[0].startswith("devices[0].profile: 'no-such-meter': ")
