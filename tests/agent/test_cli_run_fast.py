"""``edge-agent run --config FILE`` starts without click; every other command line still goes to it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.cli import run_config_arg
from tests.conftest import agent_argv, agent_env

_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.M)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--config", "site.yaml"], Path("site.yaml")),
        (["run", "--config=/etc/kbe/site.yaml"], Path("/etc/kbe/site.yaml")),
        (["run"], None),
        (["run", "--config"], None),
        (["run", "--config", "--help"], None),
        (["run", "--config="], None),
        (["run", "--help"], None),
        (["run", "--config", "a.yaml", "--verbose"], None),
        (["config", "check", "site.yaml"], None),
        ([], None),
    ],
)
def test_only_exactly_run_config_takes_the_fast_path(args: list[str], expected: Path | None) -> None:
    assert run_config_arg(args) == expected


def test_a_bad_config_names_the_field_and_exits_2_without_click(tmp_path: Path) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump({
        "site": {"id": "bn-01", "name": "Bad", "location": {"lat": 121.0, "lon": 106.1}},
        "devices": [{"driver": "system", "name": "board", "period_s": 1}],
        "store": {"path": str(tmp_path / "store.db")},
    }))
    argv = agent_argv("run", "--config", str(cfg))
    out = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=agent_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    problems = [line for line in out.stderr.splitlines() if not line.startswith("import time:")]
    assert problems
    assert all(line.startswith(f"{cfg}: ") for line in problems), problems
    assert any("site.location.lat" in line for line in problems), problems
    imported = set(_IMPORT_LINE.findall(out.stderr))
    assert "agent.config" in imported, "the import list was not captured"
    assert not {m for m in imported if m.split(".")[0] == "click"}


def test_other_command_lines_still_go_through_click(tmp_path: Path) -> None:
    out = subprocess.run(agent_argv("run"), env=agent_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "Missing option '--config'" in out.stderr
    cfg = tmp_path / "site.yaml"
    cfg.write_text("site: {}\n")
    out = subprocess.run(agent_argv("config", "check", str(cfg)), env=agent_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert f"{cfg}: site.id" in out.stderr
