"""The commissioning report for the work order: self-contained HTML (an inline SVG chart of each
point's last minutes) and JSON, in Vietnamese and English."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from agent.commissioning.checks import CheckResult
from kernel.i18n import LANGUAGES, N_, gettext_for

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATUS_WORDS = {"ok": N_("OK"), "warn": N_("Warning"), "fail": N_("Failed"), "skip": N_("Not applicable")}


def sparkline(series: Sequence[tuple[float, float]], width: int = 160, height: int = 32) -> str:
    """An inline SVG polyline of ``(ts, value)`` samples ('' when fewer than two)."""
    if len(series) < 2:
        return ""
    t0, t1 = series[0][0], series[-1][0]
    values = [v for _, v in series]
    lo, hi = min(values), max(values)
    span_t = (t1 - t0) or 1.0
    span_v = (hi - lo) or 1.0
    pts = " ".join(
        f"{(t - t0) / span_t * (width - 2) + 1:.1f},{height - 1 - (v - lo) / span_v * (height - 2):.1f}"
        for t, v in series
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><polyline fill="none" stroke="#1565c0" '
        f'stroke-width="1.5" points="{pts}"/></svg>'
    )


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )
    env.filters["sparkline"] = lambda s: jinja2.utils.markupsafe.Markup(sparkline(s))
    return env


def results_json(results: Sequence[CheckResult], site: Any, when: float) -> dict[str, Any]:
    """The report as JSON, every text in both languages."""

    def both(msg: Any) -> dict[str, str] | None:
        return None if msg is None else {lang: msg.render(lang) for lang in LANGUAGES}

    return {
        "site": {"id": site.id, "name": site.name},
        "created": dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat(),
        "passed": all(r.status != "fail" for r in results),
        "checks": [
            {
                "id": r.id,
                "status": r.status,
                "title": both(r.title),
                "detail": both(r.detail),
                "advice": both(r.advice),
                "points": [
                    {k: v for k, v in pt.items() if k != "series"} | {"samples": len(pt.get("series", ()))}
                    for pt in r.points
                ],
            }
            for r in results
        ],
    }


def render_html(results: Sequence[CheckResult], site: Any, when: float, lang: str) -> str:
    """The report as one self-contained HTML page in ``lang``."""
    env = _env()
    trans = gettext_for(lang)
    env.install_gettext_translations(trans, newstyle=True)  # type: ignore[attr-defined]
    local = dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template("report.html").render(
        lang=lang,
        site=site,
        when=local,
        results=results,
        passed=all(r.status != "fail" for r in results),
        word=lambda status: trans.gettext(STATUS_WORDS[status]),
        say=lambda msg: "" if msg is None else msg.render(trans.gettext),
    )


def write_reports(results: Sequence[CheckResult], site: Any, out_dir: Path, when: float) -> list[Path]:
    """Write ``commissioning-<site>.json`` and one HTML report per language; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"commissioning-{site.id}"
    paths = [base.with_suffix(".json")]
    paths[0].write_text(json.dumps(results_json(results, site, when), ensure_ascii=False, indent=1), "utf-8")
    for lang in LANGUAGES:
        path = out_dir / f"commissioning-{site.id}.{lang}.html"
        path.write_text(render_html(results, site, when, lang), "utf-8")
        paths.append(path)
    return paths
