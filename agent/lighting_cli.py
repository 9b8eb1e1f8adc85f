"""``edge-agent lighting``: technician tools for street lighting (no network needed).

``edge-agent lighting plan --config site.yaml`` prints, for the coming nights, when the lamps go on and
off, which calendar rule applies, and each group's dimming steps; then any persisted remote overrides.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from control.lighting.astro import AstroClock, night_of
from control.lighting.calendar import rule_for_night
from control.lighting.config import LightingConfig, night_minute
from control.lighting.state import LightingState, state_file


def night_plan(cfg: LightingConfig, astro: AstroClock, night: dt.date, state: LightingState) -> str:
    """One line per group for ``night``: on/off times, the rule, the level steps while lit."""
    times = astro.night(night)
    rule = rule_for_night(cfg.calendar, night)
    on_m = night_minute(times.on.strftime("%H:%M"))
    off_m = night_minute(times.off.strftime("%H:%M"))
    head = f"{night.isoformat()}  on {times.on:%H:%M}  off {times.off:%H:%M}  {rule.name if rule else '-'}"
    lines = [head]
    for g in cfg.groups:
        name = rule.profile if rule else state.profiles.get(g.name, g.profile)
        profile = cfg.profile(name)
        steps = [f"{times.on:%H:%M} {profile.start_level}%"]
        for s in profile.steps:
            m = night_minute(s.at)
            if m <= on_m:
                steps[0] = f"{times.on:%H:%M} {s.level}%"
            elif m < off_m:
                steps.append(f"{s.at} {s.level}%")
        lines.append(f"    {g.name} ({name}): " + ", ".join(steps))
    return "\n".join(lines)


@click.group("lighting")
def lighting_cli() -> None:
    """Street-lighting tools."""


@lighting_cli.command("plan")
@click.option(
    "--config", "config_file", required=True, type=click.Path(path_type=Path), help="Site config YAML."
)
@click.option("--from", "start", default=None, help="First night (YYYY-MM-DD); default: tonight.")
@click.option("--nights", default=7, type=click.IntRange(1, 366), show_default=True)
def plan(config_file: Path, start: str | None, nights: int) -> None:
    """Print the switching times and dimming steps of the coming nights."""
    from agent.config import load_config

    site = load_config(config_file)  # a ConfigError is printed one problem a line by the entry point
    if site.lighting is None:
        raise click.ClickException(f"{config_file} has no lighting section")
    cfg = site.lighting
    loc = site.site.location
    astro = AstroClock(loc.lat, loc.lon, site.site.timezone, cfg.astro, loc.elevation_m)
    try:
        first = dt.date.fromisoformat(start) if start else night_of(dt.datetime.now(astro.tz))
    except ValueError:
        raise click.BadParameter(f"{start!r} is not a date like 2026-02-16", param_hint="--from") from None
    path = state_file(cfg.state_path, site.store.path)
    state = LightingState.load(path if path is not None and path.exists() else None)
    for i in range(nights):
        click.echo(night_plan(cfg, astro, first + dt.timedelta(days=i), state))
    for circuit, ov in sorted(state.overrides.items()):
        until = dt.datetime.fromtimestamp(ov.until, astro.tz)
        click.echo(
            f"override {circuit}: {ov.level}% until {until:%Y-%m-%d %H:%M} ({ov.command_id or 'no id'})"
        )
