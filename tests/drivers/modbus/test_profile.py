"""Profiles: validation with path-named errors; shipped profiles load; site-config entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drivers.modbus.kind import Config
from drivers.modbus.profile import load_profile, shipped_profiles
from kernel.config_base import validation_problems
from kernel.errors import ConfigError


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_shipped_profile_loads_and_cites_a_source():
    names = shipped_profiles()
    assert {"eastron-sdm120", "eastron-sdm630", "soil-7in1", "xy-md02", "supmea-do7013", "ysi-odo-ct"} <= set(
        names
    )
    for name in names:
        prof = load_profile(name)
        assert prof.sources, name
        text = (Path("drivers/modbus/profiles") / f"{name}.yaml").read_text()
        assert text.startswith("#"), f"{name} has no header comment citing its datasheet"
        assert "http" in text.split("model:")[0]


def test_errors_name_the_path_and_value(tmp_path):
    bad = {
        "model": "X",
        "points": [
            {"name": "ok", "table": "input_register", "address": 0},
            {"name": "t", "table": "holding_register", "address": 1, "type": "float33"},
            {"name": "c", "table": "coil", "address": 0, "type": "uint16"},
            {"name": "s", "table": "input_register", "address": 5, "type": "string"},
            {"name": "w", "table": "input_register", "address": 9, "writable": True},
            {"name": "e", "table": "input_register", "address": 65535, "type": "float32"},
        ],
    }
    with pytest.raises(ConfigError) as exc:
        load_profile(write(tmp_path, bad))
    text = "\n".join(exc.value.problems)
    assert "points[1].type: 'float33' is not valid" in text
    assert "points[2]: " in text
    assert "must be bool" in text
    assert "points[3]: " in text
    assert "needs count" in text
    assert "points[4]: " in text
    assert "cannot be written" in text
    assert "points[5]: " in text
    assert "runs past 65535" in text


def test_duplicate_names_and_unknown_fields(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_profile(
            write(
                tmp_path,
                {
                    "model": "X",
                    "points": [
                        {"name": "a", "table": "coil", "address": 0, "type": "bool"},
                        {"name": "a", "table": "coil", "address": 1, "type": "bool", "colour": "red"},
                    ],
                },
            )
        )
    assert any("points[1].colour: unknown field" in p for p in exc.value.problems)
    with pytest.raises(ConfigError) as exc:
        load_profile(
            write(
                tmp_path,
                {
                    "model": "X",
                    "points": [
                        {"name": "a", "table": "coil", "address": 0, "type": "bool"},
                        {"name": "a", "table": "coil", "address": 1, "type": "bool"},
                    ],
                },
            )
        )
    assert "used twice" in exc.value.problems[0]


def test_unknown_profile_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError) as exc:
        load_profile("no-such-meter")
    assert "eastron-sdm120" in exc.value.problems[0]


def test_site_config_entry_validates_profile_and_overrides():
    from pydantic import ValidationError

    ok = Config.model_validate(
        {
            "driver": "modbus",
            "name": "m1",
            "profile": "eastron-sdm120",
            "unit": 3,
            "line": {"type": "serial", "port": "/dev/ttyUSB0", "baudrate": 2400},
            "overrides": {"voltage": {"min": 180, "max": 260}},
        }
    )
    assert ok.settings().overrides == {"voltage": {"min": 180, "max": 260}}
    with pytest.raises(ValidationError) as exc:
        Config.model_validate(
            {
                "driver": "modbus",
                "name": "m1",
                "profile": "eastron-sdm120",
                "unit": 300,
                "line": {"type": "tcp", "host": "h", "port": 70000},
                "overrides": {"volts": {"min": 1}},
            }
        )
    text = "\n".join(validation_problems(exc.value))
    assert "unit: 300 is not valid" in text
    assert "line.tcp.port" in text or "line.port" in text
    with pytest.raises(ValidationError) as exc:
        Config.model_validate(
            {
                "driver": "modbus",
                "name": "m1",
                "profile": "eastron-sdm120",
                "unit": 1,
                "line": {"type": "tcp", "host": "h"},
                "overrides": {"volts": {"min": 1}},
            }
        )
    assert "volts" in str(exc.value)
    with pytest.raises(ValidationError) as exc:
        Config.model_validate(
            {
                "driver": "modbus",
                "name": "m1",
                "profile": "nope",
                "unit": 1,
                "line": {"type": "tcp", "host": "h"},
            }
        )
    assert "profile" in validation_problems(exc.value)[0]
