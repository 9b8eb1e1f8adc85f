"""The kind registry: every shipped kind declared by entry point, loaded lazily, and a clear stop when none is."""

from __future__ import annotations

import subprocess
import typing

import pytest

from agent.cli import main
from kernel import kinds as kinds_module
from kernel.errors import ConfigError
from kernel.kinds import Kind, KindRegistry, ModuleKind
from tests.conftest import agent_argv, agent_env

SHIPPED = {"system", "modbus", "gpio", "pms", "sds011", "nmea_gps", "lighting", "traffic", "camera", "farm"}


def test_every_shipped_kind_is_declared_in_pyproject_and_loads_as_a_kind() -> None:
    declared = kinds_module._checkout_entry_points()
    assert set(declared) == SHIPPED
    registry = KindRegistry()
    for name in sorted(SHIPPED):
        kind = registry.get(name)
        assert isinstance(kind, Kind)
        assert isinstance(kind, ModuleKind)
        # The config model's driver field names the kind it is registered as.
        driver = kind.config.model_fields["driver"].annotation
        assert typing.get_args(driver) == (name,), name


def test_rig_support_is_declared_by_the_kinds_rigs_use() -> None:
    registry = KindRegistry()
    stream = registry.rig_kinds("stream")
    assert {k: v.name for k, v in stream.items()} == {
        "pms": "pms",
        "pms5003": "pms",
        "sds011": "sds011",
        "nmea_gps": "nmea_gps",
        "nmea": "nmea_gps",
    }
    assert registry.rig_kind("modbus", "modbus").name == "modbus"
    modbus = registry.get("modbus").rig
    assert modbus is not None
    assert modbus.point_ranges({"profile": "xy-md02"})["temperature"] == (-40.0, 125.0)  # from the profile
    with pytest.raises(KeyError, match="'camera' is not an emulated device kind"):
        registry.rig_kind("camera")


def test_only_the_named_kind_is_imported() -> None:
    code = (
        "import sys\n"
        "from kernel.kinds import KindRegistry\n"
        "r = KindRegistry()\n"
        "assert len(r.names()) >= 10, r.names()\n"
        "before = set(sys.modules)\n"
        "r.get('sds011')\n"
        "print(sorted(m for m in ('drivers.sds011.driver', 'drivers.pms.driver', 'models.camera.kind',"
        " 'control.lighting.kind', 'drivers.sds011.emulator') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [*agent_argv()[:1], "-c", code], env=agent_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['drivers.sds011.driver']"


def test_no_registered_kind_is_one_clear_line_and_exit_2(monkeypatch, capsys, tmp_path) -> None:
    """A checkout run without the distribution installed (and no pyproject to read): say what is missing."""
    monkeypatch.setattr(kinds_module, "discover", lambda extra=None: {})
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: s1, name: n, location: {lat: 1, lon: 2}}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["config", "check", str(site)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no device kind is registered" in err
    assert "kinhbac_edge.kinds" in err
    assert "install the kinhbac-edge distribution" in err


def test_the_checkout_declarations_win_over_stale_installed_metadata(monkeypatch) -> None:
    """Installed metadata older than the checkout (a kind added since pip install -e) still finds every kind."""

    class _Ep:
        def __init__(self, name: str, value: str) -> None:
            self.name, self.value = name, value

    stale = [_Ep("modbus", "old.module"), _Ep("vendor_x", "vendor_x.kind")]
    monkeypatch.setattr(kinds_module.metadata, "entry_points", lambda group: stale)
    found = kinds_module.discover()
    assert found["modbus"] == "drivers.modbus.kind"  # from pyproject.toml
    assert found["vendor_x"] == "vendor_x.kind"  # another distribution's kind is kept
    assert set(found) >= SHIPPED


def test_a_kind_that_is_not_a_kind_is_refused() -> None:
    registry = KindRegistry({"broken": "kernel.errors:ConfigError", "bare": "kernel.errors"})
    with pytest.raises(ConfigError, match=r"'broken' .* is not a kind: it needs Config and build_sources"):
        registry.get("broken")
    with pytest.raises(ConfigError, match=r"'bare' .* is not a kind"):
        registry.get("bare")
    with pytest.raises(ConfigError, match="no device kind is registered"):
        KindRegistry({})


def test_a_kind_that_cannot_be_imported_is_one_problem_naming_the_device(tmp_path) -> None:
    from agent.config import parse_config

    kinds = KindRegistry().with_kinds([("vanished", "kbe_vanished.driver")])
    site = {"site": {"id": "s1", "name": "n", "location": {"lat": 1, "lon": 2}}}
    with pytest.raises(ConfigError) as err:
        parse_config(site | {"devices": [{"driver": "vanished", "name": "x"}]}, kinds=kinds)
    assert err.value.problems == [
        "devices[0].driver: device kind 'vanished' cannot be loaded from kbe_vanished.driver: "
        "ModuleNotFoundError: No module named 'kbe_vanished'"
    ]


def test_config_kinds_lists_every_registered_kind(capsys) -> None:
    main(["config", "kinds"])
    lines = capsys.readouterr().out.splitlines()
    assert {line.split()[0] for line in lines} == SHIPPED
    assert "modbus       drivers.modbus.kind" in lines
