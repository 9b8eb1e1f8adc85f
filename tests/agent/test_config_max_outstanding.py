"""``max_outstanding`` on a ``tcp`` line: validated, the same for every device of the line, and handed
to the bus the running agent builds (so the site config really pipelines)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.config import load_config
from drivers.modbus.bus import ModbusBus
from drivers.modbus.kind import build_sources
from kernel.errors import ConfigError
from tests.drivers.modbus.helpers import context


def tcp(name: str, unit: int, **line: object) -> dict:
    return {"driver": "modbus", "name": name, "profile": "eastron-sdm120", "unit": unit,
            "line": {"type": "tcp", "host": "10.0.0.5", "port": 502, **line}}


def site(tmp_path: Path, devices: list[dict]) -> Path:
    doc = {"site": {"id": "bn-mo-01", "name": "mo", "location": {"lat": 21.0, "lon": 106.0}},
           "devices": devices, "store": {"path": "var/store.db"}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("bad", [0, 33, "many"])
def test_out_of_range_is_refused_with_the_field_named(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(site(tmp_path, [tcp("m1", 1, max_outstanding=bad)]))
    assert any("max_outstanding" in p for p in exc.value.problems), exc.value.problems


def test_one_line_two_depths_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(site(tmp_path, [tcp("m1", 1, max_outstanding=4), tcp("m2", 2)]))
    assert any("max_outstanding" in p and "10.0.0.5:502" in p for p in exc.value.problems), exc.value.problems


def test_the_bus_of_the_line_gets_it(tmp_path: Path) -> None:
    cfg = load_config(site(tmp_path, [tcp("m1", 1, max_outstanding=6), tcp("m2", 2, max_outstanding=6)]))
    (bus,) = build_sources(list(cfg.devices), context())
    assert isinstance(bus, ModbusBus)
    assert bus.max_outstanding == 6
    default = load_config(site(tmp_path, [tcp("m1", 1)]))
    (bus1,) = build_sources(list(default.devices), context())
    assert isinstance(bus1, ModbusBus)
    assert bus1.max_outstanding == 1
