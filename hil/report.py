"""The end of a run: a per-device table and the checks on the terminal, JUnit XML for bench CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from hil.expect import Verdict
from hil.schedule import FaultWindow


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def device_table(verdict: Verdict) -> str:
    """One line per device: readings, rate, out-of-range values, faults, worst recovery, status."""
    header = ("device", "kind", "readings", "per min", "out of range", "faults", "recovery s", "status")
    rows = [
        (
            d.name,
            d.kind,
            str(d.readings),
            _fmt(d.per_minute),
            str(d.out_of_range),
            str(d.faults),
            _fmt(d.worst_recovery_s),
            "FAIL " + ",".join(d.failed) if d.failed else "ok",
        )
        for d in verdict.devices
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out.extend(line.format(*r) for r in rows)
    return "\n".join(out)


def render(
    rig_name: str, verdict: Verdict, windows: list[FaultWindow], elapsed_s: float, header: str | None = None
) -> str:
    """The whole terminal report (``header`` replaces the first line, for rigs that store no readings)."""
    out = [
        header
        or f"HIL rig {rig_name}: {elapsed_s:.0f} s, {verdict.rows} readings stored, store last seq {verdict.last_seq}",
        "",
    ]
    out.append(device_table(verdict))
    if windows:
        out.append("")
        out.append("faults:")
        for w in windows:
            state = (
                "not reached" if w.start_wall is None else ("FAILED " + w.error if w.error else "injected")
            )
            out.append(f"  {w.label}: {state}")
    out.append("")
    out.append("checks:")
    for c in verdict.checks:
        mark = "ok  " if c.ok else "FAIL"
        if c.skipped:
            mark = "skip"
        out.append(f"  {mark} {c.label}: {c.detail}")
    out.append("")
    failures = verdict.failures
    if failures:
        out.append(
            f"FAILED: {len(failures)} of {len(verdict.checks)} expectations: "
            + ", ".join(c.label for c in failures)
        )
    else:
        out.append(f"PASSED: {len(verdict.checks)} expectations")
    return "\n".join(out)


def junit_xml(rig_name: str, verdict: Verdict, elapsed_s: float, report: str = "") -> bytes:
    """JUnit XML: one testsuite per rig, one testcase per expectation (per device where it applies)."""
    suite = ET.Element(
        "testsuite",
        name=f"hil.{rig_name}",
        tests=str(len(verdict.checks)),
        failures=str(len(verdict.failures)),
        errors="0",
        skipped=str(sum(1 for c in verdict.checks if c.skipped)),
        time=f"{elapsed_s:.1f}",
    )
    for c in verdict.checks:
        case = ET.SubElement(suite, "testcase", classname=f"hil.{rig_name}", name=c.label, time="0")
        if not c.ok:
            fail = ET.SubElement(case, "failure", message=f"{c.label}: {c.detail}", type="HilExpectation")
            fail.text = c.detail
        elif c.skipped:
            ET.SubElement(case, "skipped", message=c.detail)
        else:
            ET.SubElement(case, "system-out").text = c.detail
    if report:
        ET.SubElement(suite, "system-out").text = report
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: Path, rig_name: str, verdict: Verdict, elapsed_s: float, report: str = "") -> None:
    """Write the JUnit XML file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(junit_xml(rig_name, verdict, elapsed_s, report))


def junit_error(rig_name: str, message: str) -> bytes:
    """JUnit XML for a run that could not be carried out (a process would not start, say)."""
    suite = ET.Element("testsuite", name=f"hil.{rig_name}", tests="1", failures="0", errors="1", skipped="0")
    case = ET.SubElement(suite, "testcase", classname=f"hil.{rig_name}", name="run", time="0")
    ET.SubElement(
        case, "error", message=message.splitlines()[0] if message else "error", type="HilFailure"
    ).text = message
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def junit_broken_rig(rig_name: str, message: str) -> bytes:
    """JUnit XML for a rig file that cannot be run: one failing testcase carrying the reason."""
    suite = ET.Element("testsuite", name=f"hil.{rig_name}", tests="1", failures="1", errors="0", skipped="0")
    case = ET.SubElement(suite, "testcase", classname=f"hil.{rig_name}", name="rig_file", time="0")
    first = message.splitlines()[0] if message else "the rig file cannot be run"
    ET.SubElement(case, "failure", message=first, type="RigFileInvalid").text = message
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
