"""``hil run --report``: the HTML page and its JSON figures match what the receiver stored, and a
rig file that cannot be run still leaves JUnit XML with the reason as a failure."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import agent_argv, agent_env

SHORT_RIG = """\
version: 1
rig: short-report
description: one RTU sensor and one serial sensor; a dead sensor, then a broker outage
duration_s: 36
lines:
  - {name: rs485-1, type: rtu, baudrate: 9600}
devices:
  - {kind: modbus, name: th, profile: xy-md02, line: rs485-1, unit: 1, poll_s: 1}
  - {kind: serial, name: pm, sensor: pms5003, period_s: 1}
faults:
  - {kind: dead, device: th, at_s: 3, until_s: 6}
  - {kind: broker_down, at_s: 7, until_s: 11}
expect:
  recovery_s: 10
  backlog_delivered_s: 24  # resends after ack_timeout_s (5 s) plus a jittered reconnect; 16.5 s seen on a shared CI machine
"""


def _hil(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agent_argv("hil", "run", *args),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(120)
def test_report_figures_match_the_receivers_rows(tmp_path: Path) -> None:
    rig = tmp_path / "short.yaml"
    rig.write_text(SHORT_RIG)
    work, html_file, junit = tmp_path / "work", tmp_path / "out" / "report.html", tmp_path / "junit.xml"
    result = _hil(str(rig), "--report", str(html_file), "--junit", str(junit), "--work", str(work))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "hil short-report  [run]  00:00 / 00:36" in result.stderr  # the first progress line, no TTY
    fig = json.loads(html_file.with_suffix(".json").read_text())

    with sqlite3.connect(work / "receiver.db") as db:
        rows = db.execute(
            "SELECT device, ts, quality FROM readings WHERE site_id = 'hil-short-report'"
        ).fetchall()
    assert fig["rows"] == len(rows) > 100
    per_device = Counter(d for d, _, _ in rows)
    start, width = fig["start_wall"], fig["bucket_s"]
    for dev in fig["devices"]:
        mine = [(ts, q) for d, ts, q in rows if d == dev["name"]]
        assert dev["rows"] == per_device[dev["name"]] == len(mine)
        assert dev["errors"] == sum(1 for _, q in mine if q != 0)
        # The timeline, bucket by bucket, is the receiver's rows bucketed by reading timestamp.
        expected = Counter(int((ts - start) // width) for ts, q in mine if q == 0 and ts >= start)
        for i, n in enumerate(dev["stored"]):
            assert n == expected.get(i, 0), (dev["name"], i)
        assert sum(dev["stored"]) + sum(dev["error_buckets"]) + dev["before_start"] + dev["after_end"] == len(
            mine
        )
    th = next(d for d in fig["devices"] if d["name"] == "th")
    dead = next(f for f in th["faults"] if f["kind"] == "dead")
    assert 2.5 < dead["start_s"] < dead["end_s"] < 9
    # th was dead for 3 s: its buckets inside the window hold nothing.
    inside = th["stored"][int(dead["start_s"]) + 1 : int(dead["end_s"])]
    assert sum(inside) == 0, inside

    # The backlog rose during the broker outage and drained after it; the check names its worst delay.
    outage = fig["outages"][0]
    assert outage["peak_backlog"] > 20  # 4 s of about 14 readings a second held in the store
    assert outage["drained_after_s"] is not None
    checks = {c["label"]: c for c in fig["checks"]}
    assert checks["backlog_delivered"]["status"] == "pass"
    # Within the rig's own limit (24 s: resends after ack_timeout_s plus a jittered reconnect; 16.5 s
    # seen on a loaded CI machine), which a passing check implies: a tighter bound here judged speed.
    limit = yaml.safe_load(SHORT_RIG)["expect"]["backlog_delivered_s"]
    assert 0 <= checks["backlog_delivered"]["worst"] <= limit
    assert checks["recovery[th]"]["status"] == "pass"
    assert checks["recovery[pm]"]["status"] == "not checked"  # no fault touched it

    page = html_file.read_text()
    assert page.count("<svg") == 1 + len(fig["devices"])
    for external in ("<script", "<link", "src=", "url(", "@import"):
        assert external not in page
    assert "backlog_delivered" in page
    assert "PASSED" in page
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "0"


def test_a_broken_rig_file_writes_junit_with_the_reason(tmp_path: Path) -> None:
    rig = tmp_path / "broken.yaml"
    rig.write_text(
        "rig: broken\nduration_s: 60\ndevices: [{kind: modbus, name: th, profile: xy-md02, line: nowhere, unit: 1}]\n"
    )
    junit = tmp_path / "ci" / "junit.xml"
    result = _hil(str(rig), "--junit", str(junit), timeout=60)
    assert result.returncode == 2
    assert "devices[0].line" in result.stderr
    assert "Traceback" not in result.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert "devices[0].line: no line named 'nowhere'" in (failure.text or "")


def test_an_unreadable_rig_file_writes_junit_too(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = _hil(str(tmp_path / "missing.yaml"), "--junit", str(junit), timeout=60)
    assert result.returncode == 2
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None
    assert "missing.yaml" in (failure.text or "")
