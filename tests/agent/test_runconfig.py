"""The running agent's plain config types (agent/runconfig.py, generated) and the hand-over that builds them.

A config the pydantic models validated, passed through the hand-over's JSON, must come back as runtime
objects with the same fields, the same values of the same types and the same answers to every method
the agent calls; the generated module must be what the generator writes from today's models.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from agent import runconfig
from agent.config import SiteConfig, parse_config
from agent.handover import document, plain
from drivers.modbus.device import apply_overrides
from drivers.modbus.kind import cached_profile
from drivers.modbus.profile import load_profile, shipped_profiles
from kernel.errors import ConfigError
from sync.signing import ensure_keypair
from tests.conftest import agent_argv, agent_env

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_module_is_what_the_generator_writes() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_runconfig.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def same(runtime: Any, model: Any, where: str = "") -> None:
    """``runtime`` holds what ``model`` holds: same fields, values and types, all the way down."""
    if isinstance(model, BaseModel):
        assert dataclasses.is_dataclass(runtime), f"{where}: {type(runtime).__name__} is not a runtime type"
        assert [f.name for f in dataclasses.fields(runtime) if f.name != "model_fields_set"] == list(
            type(model).model_fields
        ), where
        for name in type(model).model_fields:
            same(getattr(runtime, name), getattr(model, name), f"{where}.{name}")
        return
    if isinstance(model, list):
        assert isinstance(runtime, list), where
        assert len(runtime) == len(model), where
        for i, (r, m) in enumerate(zip(runtime, model, strict=True)):
            same(r, m, f"{where}[{i}]")
        return
    if isinstance(model, dict):
        assert isinstance(runtime, dict), where
        assert list(runtime) == list(model), where
        for k in model:
            same(runtime[k], model[k], f"{where}[{k!r}]")
        return
    assert type(runtime) is type(model), f"{where}: {runtime!r} is not a {type(model).__name__}"
    assert runtime == model, f"{where}: {runtime!r} != {model!r}"


def handed(cfg: SiteConfig) -> tuple[Any, dict[str, Any]]:
    """The runtime config and profiles the running agent would build from ``cfg``'s hand-over."""
    doc = document(cfg)
    assert doc is not None
    doc = json.loads(json.dumps(doc))
    return runconfig.site_config(doc["config"]), {p: runconfig.profile(d) for p, d in doc["profiles"].items()}


@pytest.fixture
def meter_site(tmp_path: Path) -> dict[str, Any]:
    ensure_keypair(tmp_path, "site")
    ensure_keypair(tmp_path, "centre")
    lines = [
        {"type": "tcp", "host": "10.0.0.5", "port": 1502, "max_outstanding": 4},
        {"type": "serial", "port": "/dev/ttyUSB0", "baudrate": 19200, "parity": "E", "stopbits": 1},
        {"type": "pty", "path": "/dev/pts/7"},
        {"type": "rtu-over-tcp", "host": "gw.local", "baudrate": 4800},
    ]
    devices = [
        {"driver": "modbus", "name": f"meter-{i}", "profile": "eastron-sdm120", "unit": 1 + i, "line": line}
        for i, line in enumerate(lines)
    ]
    devices[0]["overrides"] = {
        "voltage": {"min": 180, "max": None, "poll": "slow"},
        "frequency": {"enabled": False},
    }
    devices[0]["max_gap"] = 4
    devices[1]["enabled"] = False
    return {
        "site": {"id": "bn-meters", "name": "Meters", "location": {"lat": 21, "lon": 106.07}},
        "devices": devices,
        "sync": {
            "broker": "mqtt://127.0.0.1:1883",
            "allow_plaintext": True,
            "centre_public_keys": ["centre.pub"],
            "command_public_keys": [str(tmp_path / "centre.pub")],
            "signing_key_file": "site.key",
            "batch": {"max_age_s": 2},
        },
        "store": {"path": "var/store.db"},
        "logging": {"level": "DEBUG", "json": True},
        "health": {"listen": None},
        "update": {"dir": "updates", "grace_s": 3},
    }


def test_a_meter_site_comes_back_with_the_same_fields_values_and_methods(
    meter_site: dict[str, Any], tmp_path: Path
) -> None:
    cfg = parse_config(meter_site, "site.yaml", tmp_path)
    runtime, profiles = handed(cfg)
    same(runtime, cfg, "site")
    assert runtime.sync is not None
    assert runtime.sync.signing_key_file == tmp_path / "site.key"  # resolved once, before the hand-over
    for dev, model in zip(runtime.devices, cfg.devices, strict=True):
        assert isinstance(dev, runconfig.ModbusConfig)
        assert dev.line.key() == model.line.key()
        assert type(dev.line.build()) is type(model.line.build())
        assert dev.settings() == model.settings()
        assert dev == runconfig.DEVICE_KINDS["modbus"](
            plain(model)
        )  # equality is by value (lines on one bus)
        for name, override in dev.overrides.items():
            assert override.as_update() == model.overrides[name].as_update()
    assert runtime.devices[0].overrides["voltage"].as_update() == {"min": 180.0, "max": None, "poll": "slow"}
    ((path, profile),) = profiles.items()
    assert path.endswith("profiles/eastron-sdm120.yaml")
    model_points = apply_overrides(cached_profile("eastron-sdm120"), cfg.devices[0].settings().overrides)
    runtime_points = apply_overrides(profile, runtime.devices[0].settings().overrides)
    for r, m in zip(runtime_points, model_points, strict=True):
        same(r, m, f"points.{m.name}")


@pytest.mark.parametrize("name", shipped_profiles())
def test_every_shipped_profile_comes_back_the_same(name: str) -> None:
    model = load_profile(name)
    runtime = runconfig.profile(json.loads(json.dumps(plain(model))))
    same(runtime, model, name)
    for r, m in zip(runtime.points, model.points, strict=True):
        assert (r.registers(), r.end) == (m.registers(), m.end)
        assert runtime.byte_order_of(r) == model.byte_order_of(m)
        assert runtime.word_order_of(r) == model.word_order_of(m)
        assert runtime.point(r.name) == r


def test_a_site_with_a_kind_without_runtime_types_is_not_handed_over(tmp_path: Path) -> None:
    site = {"id": "bn-01", "name": "Board", "location": {"lat": 21.0, "lon": 106.0}}
    dust = {"driver": "pms", "name": "dust", "line": {"type": "serial", "port": "/dev/ttyUSB0"}}
    cfg = parse_config({"site": site, "devices": [dust], "store": {"path": "s.db"}}, "s", tmp_path)
    assert document(cfg) is None  # the pms kind has no runtime types: the site runs as before
    board = {"driver": "system", "name": "board", "period_s": 5, "disk_path": "/var"}
    cfg = parse_config({"site": site, "devices": [board], "store": {"path": "s.db"}}, "s", tmp_path)
    doc = document(cfg)
    assert doc is not None
    runtime = runconfig.site_config(json.loads(json.dumps(doc))["config"])
    same(runtime, cfg, "site")
    assert isinstance(runtime.devices[0], runconfig.SystemConfig)


def test_an_override_the_profile_refuses_is_a_config_problem_when_the_config_is_checked(
    meter_site: dict[str, Any], tmp_path: Path
) -> None:
    meter_site["devices"][0]["overrides"] = {"voltage": {"scale": 0}}
    meter_site["devices"][1]["overrides"] = {"current": {"scale": 0.0, "min": 0}}  # a disabled device too
    with pytest.raises(ConfigError) as info:
        parse_config(meter_site, "site.yaml", tmp_path)
    assert info.value.problems == [
        "devices[0].overrides.voltage: scale must not be 0",
        "devices[1].overrides.current: scale must not be 0",
    ]


@pytest.mark.parametrize("command", [("config", "check"), ("run", "--config")], ids=["config check", "run"])
def test_config_check_and_run_refuse_the_override_with_one_line_and_exit_2(
    meter_site: dict[str, Any], tmp_path: Path, command: tuple[str, str]
) -> None:
    meter_site["devices"][0]["overrides"] = {"voltage": {"scale": 0}}
    meter_site["store"] = {"path": str(tmp_path / "store.db")}
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump(meter_site))
    out = subprocess.run(agent_argv(*command, str(cfg)), env=agent_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [f"{cfg}: devices[0].overrides.voltage: scale must not be 0"]
    assert not (tmp_path / "store.db").exists()  # nothing started
