"""Site config validation: every broken config names the field and the value, and exits 2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.config import load_config, parse_config
from kernel.errors import ConfigError
from tests.conftest import agent_argv, agent_env

GOOD = {
    "site": {"id": "bn-ks-01", "name": "Khắc Niệm station", "location": {"lat": 21.19, "lon": 106.08}},
    "devices": [{"driver": "system", "name": "board", "period_s": 10}],
    "store": {"path": "var/store.db"},
}


def _with(path: str, value: object) -> dict:
    data = json.loads(json.dumps(GOOD))
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


_DELETE = object()


def _write(tmp_path: Path, data: object, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_good_config_loads_and_resolves_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.site.id == "bn-ks-01"
    assert cfg.store.path == tmp_path / "var/store.db"
    assert cfg.devices[0].name == "board"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("site.id", "Bad Id!"), "site.id: 'Bad Id!' is not valid"),
        (("site.location.lat", 123.0), "site.location.lat: 123.0 is not valid"),
        (("site.location.lon", "east"), "site.location.lon: 'east' is not valid"),
        (("site.timezone", "Asia/Hanoi-City"), "site.timezone: unknown time zone 'Asia/Hanoi-City'"),
        (("site.name", _DELETE), "site.name: required field is missing"),
        (("devices.0.driver", "modbsu"), "devices[0]"),
        (("devices.0.period_s", 0), "devices[0].period_s: 0 is not valid"),
        (("devices.0.colour", "red"), "devices[0].colour: unknown field"),
        (("store.max_bytes", 10), "store.max_bytes: 10 is not valid"),
        (
            ("sync", {"broker": "http://x", "signing_key_file": "k"}),
            "sync.broker: 'http://x' is not a broker URL",
        ),
        (("logging.level", "LOUD"), "logging.level: 'LOUD' is not valid"),
        (("health.listen", "everywhere"), "health.listen: 'everywhere' is not host:port"),
        (("version", 7), "version: 7 is not valid"),
        (("supervisor.max_restarts", -1), "supervisor.max_restarts: -1 is not valid"),
    ],
)
def test_broken_config_names_path_and_value(
    tmp_path: Path, change: tuple[str, object], expected: str
) -> None:
    data = _with(*change)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.yaml", tmp_path)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_duplicate_device_names_refused(tmp_path: Path) -> None:
    data = _with("devices", [GOOD["devices"][0], GOOD["devices"][0]])
    with pytest.raises(ConfigError, match=r"devices\[1\]\.name: 'board' is used by another device"):
        parse_config(data, "site.yaml", tmp_path)


def test_secret_file_with_loose_mode_refused(tmp_path: Path) -> None:
    from sync.signing import generate_keypair

    key, _ = generate_keypair(tmp_path / "keys", "site")
    material = key.read_text().splitlines()[1]
    key.chmod(0o644)
    data = _with("sync", {"broker": "mqtt://127.0.0.1:1883", "signing_key_file": str(key)})
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.yaml", tmp_path)
    (problem,) = [p for p in info.value.problems if p.startswith("sync.signing_key_file")]
    assert "mode 0644" in problem
    assert material not in problem  # the key's content is never printed


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site:\n  id: [unclosed\n")
    with pytest.raises(ConfigError, match="line 3"):
        load_config(path)


def test_cli_check_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    data = _with("site.location.lat", 99)
    data["logging"] = {"level": "LOUD"}
    path = _write(tmp_path, data)
    proc = subprocess.run(
        agent_argv("config", "check", str(path)), env=agent_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "site.location.lat: 99 is not valid" in proc.stderr
    assert "logging.level: 'LOUD' is not valid" in proc.stderr


def test_cli_run_with_invalid_config_starts_nothing(tmp_path: Path) -> None:
    data = _with("site.location.lat", 99)
    data["store"] = {"path": str(tmp_path / "never.db")}
    path = _write(tmp_path, data)
    proc = subprocess.run(
        agent_argv("run", "--config", str(path)), env=agent_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert not (tmp_path / "never.db").exists()


def test_cli_check_ok(tmp_path: Path) -> None:
    proc = subprocess.run(
        agent_argv("config", "check", str(_write(tmp_path, GOOD))),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok (site bn-ks-01, 1 devices)" in proc.stdout


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        agent_argv("config", "check", str(tmp_path / "nope.yaml")),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "cannot read file" in proc.stderr
    assert os.fspath(tmp_path / "nope.yaml") in proc.stderr


def test_a_modbus_site_imports_no_camera_or_model_stack(tmp_path: Path) -> None:
    """The device footprint: only the kinds a site uses are imported (OpenCV and numpy are ~40 MB)."""
    code = (
        "import sys\n"
        "from agent.config import parse_config\n"
        "import agent.app, sync.uploader\n"
        "parse_config({'site': {'id': 's', 'name': 'n', 'location': {'lat': 1, 'lon': 2}}, 'devices': [\n"
        "  {'driver': 'modbus', 'name': 'm', 'profile': 'eastron-sdm120', 'unit': 1,\n"
        "   'line': {'type': 'tcp', 'host': '127.0.0.1'}}]})\n"
        "print(sorted(m for m in ('cv2', 'numpy', 'ai_edge_litert', 'tflite_runtime', 'astral', 'traci')"
        " if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [*agent_argv()[:1], "-c", code], env=agent_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
