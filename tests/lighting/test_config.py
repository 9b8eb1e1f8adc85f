"""The lighting section validates like the rest of the site config: errors name the path and value."""

from __future__ import annotations

import pytest

from agent.config import parse_config
from control.lighting.commands import parse_command
from kernel.errors import ConfigError
from tests.lighting.conftest import lighting_dict

SITE = {"id": "bn-01", "name": "Bắc Ninh", "location": {"lat": 21.19, "lon": 106.08}}


DEVICE = {"driver": "lighting", "name": "street"}


def problems(lighting: dict, devices: list | None = None) -> list[str]:
    try:
        parse_config({"site": SITE, "devices": devices or [DEVICE], "lighting": lighting})
    except ConfigError as exc:
        return exc.problems
    return []


def test_valid_section_parses_with_device():
    cfg = parse_config(
        {"site": SITE, "devices": [{"driver": "lighting", "name": "street"}], "lighting": lighting_dict()}
    )
    assert cfg.lighting is not None
    assert [c.name for c in cfg.lighting.circuits] == ["c1", "c2"]
    assert cfg.devices[0].driver == "lighting"


def test_section_without_device_is_an_error():
    with pytest.raises(ConfigError) as err:
        parse_config({"site": SITE, "lighting": lighting_dict()})
    assert err.value.problems[0].startswith("lighting: nothing runs this section (add a device")


def test_two_lighting_devices_are_an_error():
    found = problems(lighting_dict(), [DEVICE, {"driver": "lighting", "name": "other"}])
    assert found[0].startswith("devices[1]: only one lighting device per site")


def test_lighting_device_needs_section():
    with pytest.raises(ConfigError) as err:
        parse_config({"site": SITE, "devices": [{"driver": "lighting", "name": "street"}]})
    assert err.value.problems == ["devices[0]: a lighting device needs the top-level lighting section"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["groups"][0].update(profile="nope"),
            "lighting.groups[0].profile: 'nope' is not a profile name",
        ),
        (lambda d: d["circuits"][1].update(group="x"), "lighting.circuits[1].group: 'x' is not a group name"),
        (
            lambda d: d["circuits"][0]["output"].update(dim_pin=17),
            "lighting.circuits[0].output.dim_pin: pin 17 is also this circuit's relay_pin",
        ),
        (
            lambda d: d["circuits"][1]["output"].update(relay_pin=18),
            "lighting.circuits[1].output.relay_pin: pin 18 is already used by circuits[0].output.dim_pin",
        ),
        (lambda d: d["circuits"][0].update(lamps=0), "lighting.circuits[0].lamps: 0 is not valid"),
        (
            lambda d: d["profiles"][0]["steps"][1].update(at="21:00"),
            "lighting.profiles[0].steps[1].at: '21:00' is not after the previous step",
        ),
        (
            lambda d: d["profiles"][0]["steps"][0].update(at="25:00"),
            "lighting.profiles[0].steps[0].at: '25:00' is not a time like 22:30",
        ),
        (
            lambda d: d["calendar"][0].update(lunar_new_year=False),
            "lighting.calendar[0]: a calendar rule needs dates, annual, lunar_new_year",
        ),
        (
            lambda d: d["calendar"][0].update(annual=["02-30"]),
            "lighting.calendar[0].annual[0]: '02-30' is not",
        ),
        (
            lambda d: d.update(astro={"switch_on": {"event": "sunrise"}}),
            "lighting.astro.switch_on: switch_on must be an evening event",
        ),
        (
            lambda d: d["circuits"][0].update(output={"type": "modbus", "relay_pin": 3}),
            "lighting.circuits[0].output.host: required for type modbus",
        ),
    ],
)
def test_errors_name_path_and_value(change, expected):
    d = lighting_dict()
    change(d)
    found = problems(d)
    assert any(p.startswith(expected) for p in found), found


def test_command_problems_name_the_field():
    assert parse_command({"action": "override", "circuit": "c1", "level": 150, "duration_s": 60}) == [
        "level: 150 is not valid: Input should be less than or equal to 100"
    ]
    found = parse_command({"action": "override", "level": 50, "duration_s": 60})
    assert isinstance(found, list)
    assert "name exactly one target" in found[0]
    assert parse_command({"action": "dance"}) == [
        "action: 'dance' is not one of override, clear_override, switch_profile, recalibrate"
    ]
    assert parse_command([1]) == ["(top level): a command must be a JSON object with an 'action'"]


def test_docs_example_is_a_valid_config():
    import re

    import yaml

    from tests.conftest import REPO

    text = (REPO / "docs" / "lighting.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    cfg = parse_config(yaml.safe_load(block.group(1)))
    assert cfg.lighting is not None
    assert [c.output.type for c in cfg.lighting.circuits] == ["gpio", "modbus"]
    assert cfg.lighting.photocell is not None


def test_unquoted_yaml_times_are_read_as_clock_times():
    import yaml

    from control.lighting.config import DimmingProfile

    raw = yaml.safe_load(
        "name: p\nsteps: [{at: 22:30, level: 70}, {at: 00:00, level: 50}, {at: 04:45, level: 80}]"
    )
    assert raw["steps"][0]["at"] == 1350  # PyYAML's base-60 reading
    assert [s.at for s in DimmingProfile.model_validate(raw).steps] == ["22:30", "00:00", "04:45"]
