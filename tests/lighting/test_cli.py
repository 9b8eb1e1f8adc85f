"""`edge-agent lighting plan`: the technician's view of the coming nights."""

from __future__ import annotations

import json
import subprocess
import time

import yaml

from tests.conftest import agent_argv, agent_env
from tests.lighting.conftest import lighting_dict


def write_site(tmp_path, **extra):
    lighting = lighting_dict(state_path=str(tmp_path / "state.json"), **extra)
    cfg = {
        "site": {"id": "bn-01", "name": "Bắc Ninh", "location": {"lat": 21.19, "lon": 106.08}},
        "devices": [{"driver": "lighting", "name": "street"}],
        "lighting": lighting,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def run(*args):
    return subprocess.run(agent_argv(*args), env=agent_env(), capture_output=True, text=True, timeout=60)


def test_plan_shows_tet_and_profiles_and_overrides(tmp_path):
    path = write_site(tmp_path)
    until = time.time() + 3600
    (tmp_path / "state.json").write_text(
        json.dumps({"overrides": {"c1": {"level": 30, "until": until, "set_at": 0, "command_id": "op-9"}}})
    )
    proc = run("lighting", "plan", "--config", str(path), "--from", "2026-02-15", "--nights", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("2026-02-15  on 17:5")
    assert lines[0].endswith("  -")
    assert lines[1] == "    route-1 (standard): " + lines[0][15:20] + " 100%, 22:00 70%, 00:00 50%, 04:30 80%"
    assert lines[2] == "    park (economy): " + lines[0][15:20] + " 80%, 21:00 40%"
    assert lines[3].startswith("2026-02-16  on ")
    assert lines[3].endswith("  tet")
    assert lines[4].startswith("    route-1 (festive): ")
    assert lines[-1].startswith("override c1: 30% until ")
    assert lines[-1].endswith("(op-9)")


def test_plan_refuses_bad_config_and_date(tmp_path):
    d = lighting_dict()
    d["groups"][0]["profile"] = "nope"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "site": {"id": "bn-01", "name": "x", "location": {"lat": 21.19, "lon": 106.08}},
                "devices": [{"driver": "lighting", "name": "street"}],
                "lighting": d,
            }
        )
    )
    proc = run("lighting", "plan", "--config", str(bad))
    assert proc.returncode == 2
    assert "lighting.groups[0].profile: 'nope' is not a profile name" in proc.stderr
    proc = run("lighting", "plan", "--config", str(write_site(tmp_path)), "--from", "16/02/2026")
    assert proc.returncode == 2
    assert "is not a date like 2026-02-16" in proc.stderr
