"""The expectations checker and the report, on hand-made receiver contents."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hil.expect import Row, RunRecord, evaluate
from hil.report import render, write_junit
from hil.rig import parse_rig
from hil.schedule import plan

T0 = 1_800_000_000.0
RIG: dict[str, Any] = {
    "rig": "x",
    "duration_s": 120,
    "lines": [{"name": "bus", "type": "rtu"}],
    "devices": [
        {"kind": "modbus", "name": "th", "profile": "xy-md02", "line": "bus", "unit": 1},
        {"kind": "serial", "name": "pm", "sensor": "pms5003"},
    ],
    "faults": [{"kind": "dead", "device": "th", "at_s": 30, "until_s": 60}],
    "expect": {"recovery_s": 10, "min_per_minute": 50},
}


def _record(
    rows: list[Row], last_seq: int | None = None, rig: dict | None = None, back_at: float = 62.0
) -> RunRecord:
    r = parse_rig(rig or RIG)
    _, windows = plan(r)
    for w in windows:
        w.start_wall, w.end_wall = T0 + w.planned_start_s, T0 + w.planned_end_s
    return RunRecord(
        rig=r,
        start_wall=T0,
        end_wall=T0 + 120,
        last_seq=last_seq if last_seq is not None else len(rows),
        rows=rows,
        windows=windows,
        ranges={"th": {"temp": (-40.0, 80.0)}, "pm": {"pm25": (0.0, 1000.0)}},
    )


def _healthy_rows(back_at: float = 62.0) -> list[Row]:
    rows: list[Row] = []
    for s in range(120):
        if not (30 <= s < back_at):
            rows.append(Row(0, "th", "temp", 25.0, T0 + s + 0.5))
        rows.append(Row(0, "pm", "pm25", 12.0, T0 + s + 0.25))
    rows.sort(key=lambda r: r.ts)
    return [Row(i + 1, r.device, r.point, r.value, r.ts) for i, r in enumerate(rows)]


def test_a_clean_run_passes() -> None:
    verdict = evaluate(_record(_healthy_rows()))
    assert verdict.ok, [c for c in verdict.checks if not c.ok]
    th = verdict.devices[0]
    assert th.faults == 1
    assert th.worst_recovery_s is not None
    assert th.worst_recovery_s < 3
    assert th.per_minute is not None
    assert th.per_minute > 55


def test_loss_names_the_missing_seqs() -> None:
    rows = [r for r in _healthy_rows() if r.seq not in (5, 6, 7, 40)]
    verdict = evaluate(_record(rows, last_seq=len(rows) + 4))
    check = next(c for c in verdict.checks if c.name == "no_loss")
    assert not check.ok
    assert "4 of 208 seqs never reached the receiver: 5-7, 40" in check.detail


def test_duplicates_under_two_seqs_fail() -> None:
    rows = _healthy_rows()
    rows.append(Row(len(rows) + 1, "pm", "pm25", rows[0].value, rows[0].ts))
    verdict = evaluate(_record(rows))
    check = next(c for c in verdict.checks if c.name == "no_duplicates")
    assert not check.ok
    assert "stored under several seqs" in check.detail


def test_slow_recovery_fails_for_that_device_only() -> None:
    verdict = evaluate(_record(_healthy_rows(back_at=75)))
    failed = {c.label for c in verdict.failures}
    assert failed == {"recovery[th]"}
    detail = next(c.detail for c in verdict.failures)
    assert "dead(th) at 30-60 s: not back within 10 s (next good reading 15.5 s after)" in detail


def test_out_of_range_value_fails() -> None:
    rows = _healthy_rows()
    rows[3] = Row(
        rows[3].seq, rows[3].device, rows[3].point, 900.0 if rows[3].device == "th" else -1.0, rows[3].ts
    )
    verdict = evaluate(_record(rows))
    assert [c.label for c in verdict.failures] == [f"values_in_range[{rows[3].device}]"]


def test_rate_below_minimum_fails_and_fault_time_is_excluded() -> None:
    rig = {**RIG, "devices": [RIG["devices"][0], {**RIG["devices"][1], "min_per_minute": 80}]}
    verdict = evaluate(_record(_healthy_rows(), rig=rig))
    assert [c.label for c in verdict.failures] == ["min_per_minute[pm]"]
    # th was dead for 30 s but its rate is measured over the rest of the run only.
    assert verdict.devices[0].per_minute is not None
    assert verdict.devices[0].per_minute >= 59


def test_silent_device_is_reported() -> None:
    rows = [r for r in _healthy_rows() if r.device != "pm"]
    rows = [Row(i + 1, r.device, r.point, r.value, r.ts) for i, r in enumerate(rows)]
    verdict = evaluate(_record(rows))
    assert "reported[pm]" in {c.label for c in verdict.failures}


def test_report_and_junit_name_the_failing_expectation(tmp_path: Path) -> None:
    rec = _record(_healthy_rows(back_at=75))
    verdict = evaluate(rec)
    text = render("x", verdict, list(rec.windows), 120.0)
    assert "FAILED: 1 of" in text
    assert "recovery[th]" in text
    assert any(line.startswith("th ") and "FAIL recovery" in line for line in text.splitlines())
    junit = tmp_path / "out.xml"
    write_junit(junit, "x", verdict, 120.0, text)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "1"
    failed = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failed] == ["recovery[th]"]
    assert "not back within 10 s" in (failed[0].find("failure").get("message") or "")  # type: ignore[union-attr]


def test_rate_is_not_judged_on_a_window_shorter_than_three_periods() -> None:
    rig = {**RIG, "devices": [RIG["devices"][0], {**RIG["devices"][1], "period_s": 30}]}
    rows = [r for r in _healthy_rows() if r.device == "th"]
    rows += [Row(10_000, "pm", "pm25", 12.0, T0 + 119.0)]
    rows = [Row(i + 1, r.device, r.point, r.value, r.ts) for i, r in enumerate(rows)]
    rec = _record(rows, rig=rig)
    rec.end_wall = T0 + 80  # 80 s of run, fewer than 3 x 30 s periods
    check = next(c for c in evaluate(rec).checks if c.label == "min_per_minute[pm]")
    assert check.skipped
    assert "not measured" in check.detail


def test_loss_names_seqs_the_receiver_refused() -> None:
    rows = [r for r in _healthy_rows() if r.seq not in (8, 9)]
    rec = _record(rows, last_seq=len(rows) + 2)
    rec.rejected = {8: "bad-signature", 9: "bad-signature"}
    check = next(c for c in evaluate(rec).checks if c.name == "no_loss")
    assert not check.ok
    assert check.detail == "2 seqs were refused by the receiver (bad-signature): 8-9"


def test_junit_error_for_a_run_that_could_not_start() -> None:
    from hil.report import junit_error

    root = ET.fromstring(junit_error("x", "the agent exited during start-up:\nConfigError ..."))
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("errors") == "1"
    err = suite.find("testcase/error")
    assert err is not None
    assert err.get("message") == "the agent exited during start-up:"


def test_a_fault_that_never_ends_marks_recovery_not_checked() -> None:
    rig = {**RIG, "faults": [{"kind": "crc", "device": "pm", "rate": 0.05}]}  # no end: to the end of the run
    rec = _record(_healthy_rows(back_at=30), rig=rig)
    check = next(c for c in evaluate(rec).checks if c.label == "recovery[pm]")
    assert check.skipped
    assert check.detail.startswith("not checked: crc(pm)")
    assert "lasts to the end of the run" in check.detail
    text = render("x", evaluate(rec), list(rec.windows), 120.0)
    assert "skip recovery[pm]: not checked" in text
    assert "ok   recovery[pm]" not in text


def test_a_never_ending_fault_beside_a_checked_one_is_named() -> None:
    rig = {**RIG, "faults": [*RIG["faults"], {"kind": "crc", "device": "th", "rate": 0.05, "at_s": 90}]}
    check = next(c for c in evaluate(_record(_healthy_rows(), rig=rig)).checks if c.label == "recovery[th]")
    assert check.ok
    assert not check.skipped
    assert "back after each of 1 faults" in check.detail
    assert "not checked: crc(th) at 90-120 s lasts to the end of the run" in check.detail
    assert check.worst is not None


def _backlog_rows(delay_after_end: float) -> list[Row]:
    """Rows stored every second; those taken during the outage 40-60 s arrive ``delay`` after it ends."""
    rows = []
    for i, r in enumerate(_healthy_rows()):
        rx = r.ts + 0.3
        if T0 + 40 <= r.ts <= T0 + 60:
            rx = T0 + 60 + delay_after_end * (r.ts - T0 - 40) / 20
        rows.append(Row(i + 1, r.device, r.point, r.value, r.ts, received=rx))
    return rows


BACKLOG_RIG = {
    **RIG,
    "faults": [{"kind": "broker_down", "at_s": 40, "until_s": 60}],
    "expect": {"recovery_s": 10, "backlog_delivered_s": 5},
}


def test_backlog_delivered_within_the_limit_passes() -> None:
    check = next(c for c in evaluate(_record(_backlog_rows(3.0), rig=BACKLOG_RIG)).checks if c.name == "backlog_delivered")
    assert check.ok
    assert not check.skipped
    assert check.worst is not None
    assert 2.8 <= check.worst <= 3.0  # the last row of the outage, at 59.5 s


def test_backlog_delivered_too_late_fails_with_the_delay() -> None:
    check = next(c for c in evaluate(_record(_backlog_rows(12.0), rig=BACKLOG_RIG)).checks if c.name == "backlog_delivered")
    assert not check.ok
    assert "11.5 s after the broker came back (limit 5 s)" in check.detail  # pm at 59.25 s: 12 x 19.25 / 20


def test_backlog_of_an_outage_that_never_ends_is_not_checked() -> None:
    rig = {**BACKLOG_RIG, "faults": [{"kind": "broker_down", "at_s": 100}]}
    check = next(c for c in evaluate(_record(_backlog_rows(0.0), rig=rig)).checks if c.name == "backlog_delivered")
    assert check.ok
    assert check.skipped
    assert "not checked" in check.detail


def test_check_rows_give_each_check_its_status_for_the_figures() -> None:
    from hil.expect import Check
    from hil.figures import check_rows

    rows = check_rows([
        Check("recovery", True, "back in 3 s", device="th1", worst=3.0),
        Check("no_loss", False, "2 missing"),
        Check("drain", True, "no outage", skipped=True),
    ])
    assert [r["status"] for r in rows] == ["pass", "fail", "not checked"]
    assert rows[0] == {"label": "recovery[th1]", "name": "recovery", "device": "th1", "status": "pass",
                       "worst": 3.0, "detail": "back in 3 s"}
    assert rows[1]["label"] == "no_loss"
    assert rows[1]["device"] is None
