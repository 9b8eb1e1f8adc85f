"""One self-contained HTML page for a run: inline SVG timelines and the expectations table.

No scripts, fonts, stylesheets or images from elsewhere: the page opens the same from a CI
artifact, a USB stick or an e-mail.
"""

from __future__ import annotations

import html
from typing import Any

W, H, PAD = 860, 110, 34
FAULT_FILL = "#f4a261"
STORED = "#2a9d8f"
ERROR = "#d62828"
BACKLOG = "#264653"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _x(t: float, span: float) -> float:
    return PAD + (W - 2 * PAD) * max(0.0, min(t, span)) / span if span > 0 else PAD


def _shades(faults: list[dict[str, Any]], span: float, top: float, height: float) -> list[str]:
    out = []
    for f in faults:
        x0, x1 = _x(f["start_s"], span), _x(f["end_s"], span)
        width = max(x1 - x0, 2.0)
        out.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{width:.1f}" height="{height}" fill="{FAULT_FILL}" '
            f'fill-opacity="0.35"><title>{_esc(f["label"])}</title></rect>'
        )
    return out


def _axis(span: float, bottom: float) -> list[str]:
    out = [f'<line x1="{PAD}" y1="{bottom}" x2="{W - PAD}" y2="{bottom}" stroke="#888"/>']
    step = max(1.0, span / 6)
    t = 0.0
    while t <= span + 1e-6:
        x = _x(t, span)
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 12}" font-size="10" text-anchor="middle">{t:.0f} s</text>'
        )
        t += step
    return out


def device_svg(dev: dict[str, Any], bucket: float, span: float) -> str:
    """Readings stored (bars) and errors (red bars on top) per bucket, faults shaded."""
    stored, errors = dev["stored"], dev["error_buckets"]
    peak = max([a + b for a, b in zip(stored, errors, strict=True)] or [1]) or 1
    top, bottom = 8.0, H - 20.0
    height = bottom - top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">']
    bw = (W - 2 * PAD) * bucket / span if span > 0 else 1
    for i, (good, bad) in enumerate(zip(stored, errors, strict=True)):
        x = _x(i * bucket, span)
        hg, hb = height * good / peak, height * bad / peak
        if good:
            parts.append(
                f'<rect x="{x:.1f}" y="{bottom - hg:.1f}" width="{max(bw - 1, 1):.1f}" height="{hg:.1f}" '
                f'fill="{STORED}"><title>{i * bucket:.0f} s: {good} stored</title></rect>'
            )
        if bad:
            parts.append(
                f'<rect x="{x:.1f}" y="{bottom - hg - hb:.1f}" width="{max(bw - 1, 1):.1f}" height="{hb:.1f}" '
                f'fill="{ERROR}"><title>{i * bucket:.0f} s: {bad} errors</title></rect>'
            )
    parts += _shades(dev["faults"], span, top, height)  # over the bars, translucent
    parts.append(f'<text x="2" y="{top + 8}" font-size="10">{peak}</text>')
    parts += _axis(span, bottom)
    parts.append("</svg>")
    return "".join(parts)


def backlog_svg(fig: dict[str, Any], span: float) -> str:
    """The agent store's depth over the run, broker outages shaded."""
    points = fig["backlog"]
    peak = max([d for _, d in points] or [1]) or 1
    top, bottom = 8.0, H - 20.0
    height = bottom - top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">']
    parts += _shades([f for f in fig["faults"] if f["kind"] == "broker_down"], span, top, height)
    if points:
        path = " ".join(f"{_x(t, span):.1f},{bottom - height * d / peak:.1f}" for t, d in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{BACKLOG}" stroke-width="1.5"/>')
    parts.append(f'<text x="2" y="{top + 8}" font-size="10">{peak}</text>')
    parts += _axis(span, bottom)
    parts.append("</svg>")
    return "".join(parts)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def _device_summary(d: dict[str, Any]) -> str:
    faults = ", ".join(f["label"] for f in d["faults"]) or "none"
    return (
        f"{d['rows']} readings ({d['good']} good, {d['errors']} errors), {_fmt(d['per_minute'])}/min without "
        f"faults, worst recovery {_fmt(d['worst_recovery_s'])} s; faults: {faults}"
    )


def render_html(fig: dict[str, Any]) -> str:
    """The page."""
    span = max(fig["end_wall"] - fig["start_wall"], 1e-6)
    verdict = "PASSED" if fig["ok"] else "FAILED"
    colour = "#2a9d8f" if fig["ok"] else ERROR
    summary = fig.get("summary") or (
        f"{fig['elapsed_s']:.0f} s, {fig['rows']} readings stored at the receiver, store last seq "
        f"{fig['last_seq']}; final drain {_fmt(fig['drain_s'])} s."
    )
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>HIL {_esc(fig['rig'])}: {verdict}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:960px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
        ".pass{color:#2a9d8f}.fail{color:#d62828;font-weight:bold}.skip{color:#888}"
        "h2{margin-top:1.4em}</style></head><body>",
        f'<h1>HIL rig {_esc(fig["rig"])}: <span style="color:{colour}">{verdict}</span></h1>',
        f"<p>{_esc(fig['description'])}</p>",
        f"<p>{_esc(summary)} Bars: {_esc(fig.get('stored_label', 'readings stored'))} per "
        f'{fig["bucket_s"]:g} s (<span style="color:{STORED}">good</span>, '
        f'<span style="color:{ERROR}">errors</span>); shaded: a fault was active.</p>',
        "<h2>Expectations</h2><table><tr><th>check</th><th>result</th><th>worst</th><th>detail</th></tr>",
    ]
    for c in fig["checks"]:
        cls = {"pass": "pass", "fail": "fail"}.get(c["status"], "skip")
        out.append(
            f'<tr><td>{_esc(c["label"])}</td><td class="{cls}">{_esc(c["status"])}</td>'
            f"<td>{_esc(_fmt(c['worst']))}</td><td>{_esc(c['detail'])}</td></tr>"
        )
    out.append("</table>")
    out.append(f"<h2>{_esc(fig.get('backlog_title', 'Backlog (readings waiting in the agent store)'))}</h2>")
    out.append(backlog_svg(fig, span))
    if fig["outages"]:
        out.append("<table><tr><th>broker outage</th><th>peak backlog</th><th>drained after</th></tr>")
        for o in fig["outages"]:
            out.append(
                f"<tr><td>{_esc(o['label'])}</td><td>{_fmt(o['peak_backlog'])}</td>"
                f"<td>{_fmt(o['drained_after_s'])} s</td></tr>"
            )
        out.append("</table>")
    out.append("<h2>Devices</h2>")
    for d in fig["devices"]:
        status = "FAIL " + ", ".join(d["failed"]) if d["failed"] else "ok"
        cls = "fail" if d["failed"] else "pass"
        out.append(
            f"<h3>{_esc(d['name'])} <small>({_esc(d['kind'])})</small> "
            f'<span class="{cls}">{_esc(status)}</span></h3>'
            f"<p>{_esc(d.get('summary') or _device_summary(d))}</p>"
        )
        out.append(device_svg(d, fig["bucket_s"], span))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
