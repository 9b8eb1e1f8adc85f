"""The traffic section is validated like every config: path-named problems, exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from agent.config import load_config
from kernel.errors import ConfigError
from tests.conftest import agent_argv, agent_env
from tests.traffic.helpers import SITE


def broken(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(SITE.read_text())
    edit(data["traffic"]["intersections"][0])
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def problems(tmp_path: Path, edit) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(broken(tmp_path, edit))
    return "\n".join(info.value.problems)


def test_example_site_loads() -> None:
    cfg = load_config(SITE)
    assert cfg.traffic is not None
    ix = cfg.traffic.intersections[0]
    assert ix.limits.yellow == 3.5
    assert len(ix.groups) == 6


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda ix: ix["limits"].update(yellow_s=3.0),
            "traffic.intersections[0].limits.yellow_s: 3.0 is below the ITE",
        ),
        (lambda ix: ix["limits"].update(yellow_s=7.0), "yellow_s: 7.0 is outside"),
        (
            lambda ix: ix["limits"].update(red_clearance_s=0.5),
            "traffic.intersections[0].limits.red_clearance_s",
        ),
        (lambda ix: ix["limits"].update(min_green_s=2), "traffic.intersections[0].limits.min_green_s"),
        (lambda ix: ix["limits"].update(speed_kmh=90, decel_mps2=2.0), "speed_kmh: 90"),
        (lambda ix: ix["stages"][0]["green"].append("ew"), "stages[0]: conflicting groups"),
        (
            lambda ix: ix["stages"][0].update({"green": ["ns", "ns_left", "ped_ns"], "yield": []}),
            "must yield",
        ),
        (
            lambda ix: ix["conflicts"].append(["ns", "nope"]),
            "traffic.intersections[0].conflicts[12]: 'nope' is not a signal group",
        ),
        (lambda ix: ix["plans"][0]["splits"].update(ns=10, ew=46), "plans[0].splits.ns: 10 s is below"),
        (
            lambda ix: ix["plans"][0].update(cycle_s=81),
            "traffic.intersections[0].plans[0].splits: they sum to 80 s but cycle_s is 81 s",
        ),
        (lambda ix: ix["groups"][4].pop("crossing_m"), "crossing_m: required for pedestrian group 'ped_ns'"),
        (lambda ix: ix["permissive"].append({"yield": "ns", "to": "ped_ns"}), "permissive[4]"),
        (lambda ix: ix["schedule"]["entries"][0].update(plan="night"), "schedule.entries[0].plan: 'night'"),
        (lambda ix: ix["limits"].update(link_timeout_s=1.5), "limits.link_timeout_s"),
        (
            lambda ix: ix.update(coordination={"plan": "night", "stage": "ew"}),
            "coordination.plan: 'night' is not a plan",
        ),
        (
            lambda ix: ix.update(coordination={"plan": "am_peak", "stage": "ew_left"}),
            "coordination.stage: 'ew_left' is skippable",
        ),
        (
            lambda ix: ix.update(coordination={"plan": "am_peak", "stage": "nope"}),
            "coordination.stage: 'nope' is not a stage",
        ),
        (
            lambda ix: (
                ix.update(coordination={"plan": "am_peak", "stage": "ns"}),
                ix["stages"][0].update(max_green_s=30),
            ),
            "coordination.stage: 'ns' is held 39.5 s by plan 'am_peak', above its max_green_s 30",
        ),
        (lambda ix: ix.update(coordination={"plan": "base"}), "coordination.stage"),
    ],
)
def test_bad_traffic_config_names_the_field(tmp_path: Path, edit, expected: str) -> None:
    assert expected in problems(tmp_path, edit)


def test_cli_check_exits_2(tmp_path: Path) -> None:
    path = broken(tmp_path, lambda ix: ix["limits"].update(yellow_s=2.5))
    proc = subprocess.run(
        agent_argv("config", "check", str(path)), env=agent_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "traffic.intersections[0].limits.yellow_s: 2.5 is outside 3.0..6.0 s" in proc.stderr


def test_cli_check_exits_2_on_a_bad_coordination(tmp_path: Path) -> None:
    path = broken(tmp_path, lambda ix: ix.update(coordination={"plan": "pm_peak", "stage": "ew"}))
    proc = subprocess.run(
        agent_argv("config", "check", str(path)), env=agent_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "coordination.plan: 'pm_peak' is not a plan" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_traffic_device_needs_the_section(tmp_path: Path) -> None:
    data = yaml.safe_load(SITE.read_text())
    del data["traffic"]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "devices[0]: a traffic device needs the top-level traffic section" in info.value.problems


def test_only_one_traffic_device_per_site(tmp_path: Path) -> None:
    data = yaml.safe_load(SITE.read_text())
    data["devices"].append({"driver": "traffic", "name": "signals-2"})
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    n = len(data["devices"]) - 1
    assert f"devices[{n}]: only one traffic device per site (it runs every intersection)" in info.value.problems
