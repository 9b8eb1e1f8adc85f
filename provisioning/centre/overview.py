"""The fleet as the receiver stores it: one row per site from its last status and its rejections."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sync.receiver_db import ReceiverDB


@dataclass(frozen=True)
class SiteRow:
    """One site in ``edge-agent centre sites``."""

    site_id: str
    state: str
    config_version: int | None
    update_state: str
    last_seen_s: float | None
    readings_per_s: float | None
    buffer_depth: int | None
    rejections: int
    healthy: bool | None
    release: str | None


def site_rows(db: ReceiverDB, sites: list[str] | None = None, now: float | None = None) -> list[SiteRow]:
    """Every site with a status or a rejection (or every site of ``sites``), sorted by id."""
    now = time.time() if now is None else now
    status = {
        r[0]: r
        for r in db.fetch(
            "SELECT site_id, state, config_version, update_state, received_at, readings_per_s, "
            "buffer_depth, healthy, release FROM site_status"
        )
    }
    rejections = {r[0]: int(r[1]) for r in db.fetch("SELECT site_id, COUNT(*) FROM rejections GROUP BY site_id")}
    names = sorted(set(sites) if sites is not None else set(status) | set(rejections))
    rows = []
    for site in names:
        s = status.get(site)
        rows.append(
            SiteRow(
                site_id=site,
                state=s[1] if s else "never seen",
                config_version=s[2] if s else None,
                update_state=(s[3] or "") if s else "",
                last_seen_s=now - float(s[4]) if s else None,
                readings_per_s=s[5] if s else None,
                buffer_depth=s[6] if s else None,
                rejections=rejections.get(site, 0),
                healthy=None if not s or s[7] is None else bool(s[7]),
                release=s[8] if s else None,
            )
        )
    return rows


def _cell(value: object, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def render(rows: list[SiteRow]) -> str:
    """A plain table for a terminal."""
    head = ("site", "state", "version", "update", "last seen", "readings/s", "buffer", "rejections", "health")
    body = [
        (
            r.site_id,
            r.state,
            _cell(r.config_version),
            r.update_state or "-",
            _cell(r.last_seen_s, "{:.0f} s ago"),
            _cell(r.readings_per_s, "{:.1f}"),
            _cell(r.buffer_depth),
            str(r.rejections),
            "-" if r.healthy is None else ("ok" if r.healthy else "UNHEALTHY"),
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    return "\n".join(lines)
