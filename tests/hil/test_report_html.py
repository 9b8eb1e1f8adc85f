"""The HTML report and its figures, from hand-made run data (no process started)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hil.expect import evaluate
from hil.figures import RunData, figures
from hil.html import render_html
from tests.hil.test_expect import T0, _healthy_rows, _record


@dataclass(frozen=True)
class _Sample:
    wall: float
    depth: int
    last_seq: int


def _fig(back_at: float = 62.0) -> dict:
    rec = _record(_healthy_rows(back_at=back_at))
    samples = [_Sample(T0 + t, 100 if 30 <= t < 40 else 5, t) for t in range(120)]
    data = RunData(rec.rig, evaluate(rec), rec.windows, rec.rows, samples, T0, T0 + 120, 120.0, 2.5)
    return figures(data)


def test_timelines_add_up_to_the_rows_and_show_the_fault() -> None:
    fig = _fig()
    assert fig["bucket_s"] == 1.0
    th = next(d for d in fig["devices"] if d["name"] == "th")
    assert sum(th["stored"]) == th["rows"] == 88  # 120 s minus 32 s dead
    assert th["stored"][29] == 1
    assert th["stored"][30:62] == [0] * 32
    assert th["faults"][0]["label"] == "dead(th) at 30-60 s"
    assert (th["faults"][0]["start_s"], th["faults"][0]["end_s"]) == (30.0, 60.0)


def test_page_is_self_contained_and_names_a_failing_check() -> None:
    fig = _fig(back_at=75)  # th back 15 s after its fault: recovery fails
    page = render_html(fig)
    assert "FAILED" in page
    assert re.search(r'<td>recovery\[th\]</td><td class="fail">fail</td><td>15\.5</td>', page)
    assert "<title>dead(th) at 30-60 s</title>" in page  # the shaded window says what it was
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(svg)  # well-formed inline SVG
    for external in ("<script", "<link", "src=", "url(", "@import"):
        assert external not in page
