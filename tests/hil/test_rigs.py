"""The shipped rigs pass (shortened), a rig that cannot pass fails with a clear report, and Ctrl-C
leaves nothing running. Each test runs ``edge-agent hil run`` as a subprocess, the way a bench does."""

from __future__ import annotations

import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, agent_argv, agent_env

RIGS = REPO / "hil" / "rigs"
RUN_S = "20"  # each shipped rig's timeline squeezed into this many seconds


def _hil(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agent_argv("hil", "run", *args),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _logs(work: Path) -> str:
    """The tails of the run's process logs (kept in the work dir), for a failing assertion."""
    out = []
    for name in ("agent", "receiver", "broker"):
        path = work / "logs" / f"{name}.log"
        if path.exists():
            out.append(f"--- {name}.log\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
    return "\n".join(out)


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (the run's work dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            found.append(cmd)
    return found


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "rig", ["air-quality", "water-quality", "energy-cabinet", "farm-plot", "fault-storm"]
)
def test_shipped_rig_passes(rig: str, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    work = tmp_path / "work"
    args = [str(RIGS / f"{rig}.yaml"), "--duration", RUN_S, "--junit", str(junit), "--work", str(work)]
    if rig == "fault-storm":
        args += ["--receiver", "postgres"]  # the other backend of the reference receiver
    result = _hil(*args)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:] + _logs(work)
    assert "PASSED:" in result.stdout
    assert "ok   no_loss: all" in result.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "0"
    assert int(suite.get("tests") or 0) >= 5
    # Every fault of the rig was injected, and every process it started is gone.
    assert "FAILED" not in result.stdout.split("faults:")[1].split("checks:")[0]
    assert _processes_mentioning(str(work)) == []


@pytest.mark.timeout(120)
def test_impossible_expectation_fails_with_a_clear_report(tmp_path: Path) -> None:
    rig = yaml.safe_load((RIGS / "farm-plot.yaml").read_text())
    rig["rig"] = "impossible"
    rig["faults"] = [{"kind": "dead", "device": "soil", "at_s": 10, "until_s": 20}]
    rig["devices"][1]["min_per_minute"] = 100000  # the air sensor cannot report 100000 readings a minute
    rig["duration_s"] = 40
    path = tmp_path / "impossible.yaml"
    path.write_text(yaml.safe_dump(rig))
    junit = tmp_path / "junit.xml"
    result = _hil(str(path), "--duration", "20", "--junit", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert "FAIL min_per_minute[air]:" in result.stdout
    assert "(minimum 100000)" in result.stdout
    assert "FAILED: 1 of" in result.stdout
    assert any(
        line.startswith("air ") and "FAIL min_per_minute" in line for line in result.stdout.splitlines()
    )
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "1"
    failed = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failed] == ["min_per_minute[air]"]
    assert "minimum 100000" in (failed[0].find("failure").get("message") or "")  # type: ignore[union-attr]


def test_bad_rig_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "rig: bad\nduration_s: 60\nlines: [{name: bus, type: rtu}]\n"
        "devices: [{kind: modbus, name: th, profile: xy-md02, line: bus, unit: 1}]\n"
        "faults: [{kind: crc, device: th, rate: 5}, {kind: dead, device: ghost}]\n"
    )
    result = _hil(str(path), timeout=60)
    assert result.returncode == 2
    assert "faults[0].rate: 5 is not valid" in result.stderr


@pytest.mark.timeout(90)
def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    work = tmp_path / "work"
    junit = tmp_path / "junit.xml"
    proc = subprocess.Popen(
        agent_argv("hil", "run", str(RIGS / "farm-plot.yaml"), "--work", str(work), "--junit", str(junit)),
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # Wait until the agent, the broker and the receiver are all up.
        while time.monotonic() < deadline and len(_processes_mentioning(str(work))) < 3:
            time.sleep(0.2)
        assert len(_processes_mentioning(str(work))) >= 3
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert _processes_mentioning(str(work)) == []
    suite = ET.parse(junit).getroot().find("testsuite")  # JUnit is written even for a cut-short run
    assert suite is not None
    assert suite.get("errors") == "1"


@pytest.mark.timeout(60)
def test_a_run_that_cannot_start_leaves_a_junit_error(tmp_path: Path) -> None:
    path = tmp_path / "slow.yaml"
    # Valid as a rig, but the Modbus driver refuses a 100 s answer timeout in the generated site config.
    path.write_text(
        "rig: slow\nduration_s: 10\nlines: [{name: bus, type: rtu}]\n"
        "devices: [{kind: modbus, name: th, profile: xy-md02, line: bus, unit: 1}]\n"
        "agent: {response_timeout_s: 100}\n"
    )
    junit = tmp_path / "junit.xml"
    work = tmp_path / "work"
    result = _hil(str(path), "--junit", str(junit), "--work", str(work), timeout=60)
    assert result.returncode == 2
    assert "devices[0].timeout_s" in result.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("errors") == "1"
    assert _processes_mentioning(str(work)) == []
