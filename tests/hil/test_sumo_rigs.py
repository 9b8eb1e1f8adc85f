"""The SUMO traffic rig through ``edge-agent hil run``: the monitor's rules are JUnit test cases."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil.rigfile import load_any_rig
from hil.sumo.rigfile import MONITOR_RULES, SumoRig
from kernel.errors import ConfigError
from tests.conftest import REPO, agent_argv, agent_env

RIGS = REPO / "hil" / "rigs"


def _hil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agent_argv("hil", "run", *args),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _cases(junit: Path) -> dict[str, ET.Element]:
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    return {tc.get("name") or "": tc for tc in suite.iter("testcase")}


@pytest.mark.sumo
@pytest.mark.timeout(120)
def test_sumo_rig_through_hil_run_writes_junit_with_the_monitors_expectations(tmp_path: Path) -> None:
    junit, report = tmp_path / "junit.xml", tmp_path / "traffic.html"
    result = _hil(
        str(RIGS / "traffic-junction.yaml"),
        "--duration",
        "300",
        "--junit",
        str(junit),
        "--report",
        str(report),
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "PASSED:" in result.stdout
    cases = _cases(junit)
    for rule in MONITOR_RULES:
        case = cases[f"monitor[{rule}]"]
        assert case.find("failure") is None
        assert "no finding in 300 s" in (case.findtext("system-out") or "")
    assert cases["envelope"].find("failure") is None
    assert cases["mean_delay"].find("failure") is None
    fig = json.loads(report.with_suffix(".json").read_text())
    junction = fig["devices"][0]
    assert fig["traffic"]["vehicles"] == junction["rows"] > 50
    assert sum(junction["stored"]) == junction["good"]  # every finished trip is in the timeline
    assert "<svg" in report.read_text()


@pytest.mark.sumo
@pytest.mark.timeout(120)
def test_a_forced_conflict_is_caught_and_the_monitor_findings_are_not_the_controllers(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = _hil(str(RIGS / "traffic-conflict.yaml"), "--junit", str(junit))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    cases = _cases(junit)
    assert cases["forced_conflict_caught"].find("failure") is None
    assert "final state flashing: True" in (cases["forced_conflict_caught"].findtext("system-out") or "")
    assert cases["monitor[conflict]"].find("failure") is None  # findings after the fault are its own


def test_findings_and_slow_traffic_fail_by_name() -> None:
    from hil.report import junit_xml
    from hil.sumo.monitor import Violation
    from hil.sumo.rig import RunResult
    from hil.sumo.rigfile import parse_sumo_rig, verdict_of

    rig = parse_sumo_rig({"kind": "sumo", "rig": "x", "duration_s": 300, "expect": {"max_mean_delay_s": 30}})
    r = RunResult("adaptive", 1, 1.0, 42.0, 3.0, 120, 9, sim_s=300.0)
    r.violations = [Violation(61.0, "min_green", "link 3"), Violation(90.0, "min_green", "link 4")]
    r.flashed, r.tripped_at = "readback_mismatch", 61.0
    verdict = verdict_of(rig, r)
    failed = {c.label: c for c in verdict.failures}
    assert set(failed) == {"monitor[min_green]", "envelope", "mean_delay"}
    assert failed["monitor[min_green]"].detail == "2 findings (first: t=61 s link 3, t=90 s link 4)"
    assert failed["mean_delay"].worst == 42.0
    suite = ET.fromstring(junit_xml("x", verdict, 3.0)).find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "3"


def test_sumo_rig_files_are_validated_like_the_others(tmp_path: Path) -> None:
    assert isinstance(load_any_rig(RIGS / "traffic-junction.yaml"), SumoRig)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: sumo\nrig: bad\nduration_s: 100\nmode: psychic\n")
    with pytest.raises(ConfigError) as err:
        load_any_rig(bad)
    assert "mode: 'psychic' is not valid" in "\n".join(err.value.problems)
    bad.write_text("kind: sumo\nrig: bad\nduration_s: 100\nfaults: [{kind: forced_conflict, at_s: 200}]\n")
    with pytest.raises(ConfigError) as err:
        load_any_rig(bad)
    assert "faults[0].at_s: 200.0 is not before the end (100.0 s)" in "\n".join(err.value.problems)


@pytest.mark.sumo
@pytest.mark.timeout(180)
def test_the_corridor_rig_through_hil_run_checks_every_junction_and_coordination(tmp_path: Path) -> None:
    junit, report = tmp_path / "junit.xml", tmp_path / "corridor.html"
    result = _hil(
        str(RIGS / "traffic-corridor.yaml"),
        "--duration",
        "1900",
        "--junit",
        str(junit),
        "--report",
        str(report),
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    cases = _cases(junit)
    assert cases["coordination"].find("failure") is None
    assert "free while not (j1)" in (cases["coordination"].findtext("system-out") or "")
    for rule in MONITOR_RULES:
        assert cases[f"monitor[{rule}]"].find("failure") is None
    assert cases["envelope"].find("failure") is None
    fig = json.loads(report.with_suffix(".json").read_text())
    assert fig["devices"][0]["name"] == "corridor"
    assert fig["faults"][0]["kind"] == "clock_unsync"


def test_corridor_rig_files_are_validated(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: sumo\nrig: bad\nduration_s: 100\nscenario: corridor\n"
        "faults: [{kind: clock_unsync, junction: j9, from_s: 10, to_s: 50}]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_any_rig(bad)
    assert "faults[0].junction: 'j9' is not one of j0, j1, j2" in "\n".join(err.value.problems)
    bad.write_text("kind: sumo\nrig: bad\nduration_s: 100\nmode: sumo_actuated_coord\n")
    with pytest.raises(ConfigError) as err:
        load_any_rig(bad)
    assert "mode: 'sumo_actuated_coord' runs only in scenario corridor" in "\n".join(err.value.problems)
    bad.write_text("kind: sumo\nrig: bad\nduration_s: 100\nmode: adaptive_counts\n")
    with pytest.raises(ConfigError) as err:
        load_any_rig(bad)
    assert "mode: 'adaptive_counts' runs only in scenario corridor" in "\n".join(err.value.problems)
    good = tmp_path / "good.yaml"
    good.write_text("kind: sumo\nrig: good\nduration_s: 100\nscenario: corridor\nmode: adaptive_counts\n")
    assert load_any_rig(good).mode == "adaptive_counts"  # type: ignore[union-attr]
