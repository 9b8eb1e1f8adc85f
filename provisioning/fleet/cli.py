"""``edge-agent fleet status|rollout|promote|rollback``: the operator's balena side.

balena-sdk is imported only when one of these commands runs (``provisioning/fleet/balena_backend.py``),
so the device set never needs it.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from kernel.errors import FleetError, RolloutFailed
from provisioning.fleet.progress import progress_for
from provisioning.fleet.waves import (
    Change,
    FleetBackend,
    Gate,
    Mark,
    Rollout,
    check_percents,
    plan_waves,
    promote,
    rollback,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1h"`` to seconds."""
    match = _DURATION.match(value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 30s, 10m, 1h)")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    return float(match.group(1)) * scale


class Duration(click.ParamType):
    """A click type for durations."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Seconds."""
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except click.BadParameter as exc:
            self.fail(str(exc.message), param, ctx)


def _percent(name: str, value: float) -> float:
    if not 0 <= value <= 100:
        raise click.BadParameter(f"{value} is not a percentage (0 to 100)", param_hint=name)
    return value / 100.0


def _change(release: str | None, env: str | None) -> Change | None:
    if release and env:
        raise click.UsageError("give --release or --env, not both")
    if release:
        if not re.fullmatch(r"[0-9a-f]{32,64}", release):
            raise click.BadParameter(
                f"{release!r} is not a release commit (the full hex commit balena shows)",
                param_hint="--release",
            )
        return Change(release=release)
    if env:
        name, sep, value = env.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise click.BadParameter(f"{env!r} is not NAME=VALUE", param_hint="--env")
        return Change(env_name=name, env_value=value)
    return None


def _backend(ctx: click.Context) -> FleetBackend:
    from provisioning.fleet.balena_backend import BalenaFleet

    opts = ctx.find_object(dict)
    assert opts is not None
    return BalenaFleet(opts["fleet"], opts["balena_dir"])


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    s = max(0.0, now - then)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    if s < 172800:
        return f"{s / 3600:.0f}h ago"
    return f"{s / 86400:.0f}d ago"


@click.group("fleet")
@click.option(
    "--fleet",
    "fleet_name",
    envvar="KBE_BALENA_FLEET",
    required=True,
    help="balena fleet: slug (org/name) or id. Env KBE_BALENA_FLEET.",
)
@click.option(
    "--balena-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="KBE_BALENA_DIR",
    default=None,
    help="balena-sdk data directory (its balena.cfg holds api_endpoint and token; default ~/.balena).",
)
@click.pass_context
def fleet_cli(ctx: click.Context, fleet_name: str, balena_dir: Path | None) -> None:
    """Roll releases and configuration out across a balena fleet, gated on the agents' own health."""
    ctx.obj = {"fleet": fleet_name, "balena_dir": balena_dir}


@fleet_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--stale", type=Duration(), default="3m", show_default=True, help="Health older than this is stale."
)
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool, stale: float) -> None:
    """Devices with release, online state, last seen, the agent's own health and rollout marks."""
    backend = _backend(ctx)
    devices = backend.list_devices()
    health = backend.read_health()
    marks = backend.read_marks()
    now = time.time()
    rows: list[dict[str, Any]] = []
    for d in sorted(devices, key=lambda d: d.name):
        tag = health.get(d.uuid)
        if tag is None:
            verdict = "no report"
        elif now - tag.at > stale:
            verdict = f"stale ({_ago(now, tag.at)})"
        else:
            verdict = "ok" if tag.ok else "FAIL: " + ("; ".join(tag.why) or "not ok")
        mark = Mark.decode(marks[d.uuid]) if d.uuid in marks else None
        rows.append(
            {
                "uuid": d.uuid,
                "name": d.name,
                "online": d.online,
                "last_seen": d.last_seen,
                "release": d.release,
                "pinned": d.pinned,
                "health": verdict,
                "health_at": tag.at if tag else None,
                "uplink": tag.uplink if tag else None,
                "buffer_depth": tag.depth if tag else None,
                "rollout": f"{mark.rollout}/wave {mark.wave + 1}" if mark else None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'device':<24} {'uuid':<8} {'online':<7} {'last seen':<10} {'release':<8} {'pin':<8} health")
    for r in rows:
        click.echo(
            f"{r['name'][:24]:<24} {r['uuid'][:7]:<8} {'yes' if r['online'] else 'no':<7} "
            f"{_ago(now, r['last_seen']):<10} {(r['release'] or '-')[:7]:<8} {(r['pinned'] or '-')[:7]:<8} "
            f"{r['health']}" + (f"  [rollout {r['rollout']}]" if r["rollout"] else "")
        )
    ok = sum(1 for r in rows if r["health"] == "ok")
    click.echo(f"{len(rows)} devices, {sum(1 for r in rows if r['online'])} online, {ok} healthy")


@fleet_cli.command("rollout")
@click.option("--release", help="Full commit of a successful release to roll out.")
@click.option("--env", "env", help="NAME=VALUE: a device environment variable to roll out instead.")
@click.option(
    "--canary", type=click.IntRange(min=0), default=1, show_default=True, help="Devices in the first wave."
)
@click.option(
    "--waves", default="10,50,100", show_default=True, help="Cumulative percentages after the canary."
)
@click.option("--success", default=95.0, show_default=True, help="% of a wave that must be healthy to go on.")
@click.option("--error", default=5.0, show_default=True, help="% of a wave failing that stops it at once.")
@click.option("--watch", type=Duration(), default="10m", show_default=True, help="Watch time per wave.")
@click.option("--update-timeout", type=Duration(), default="30m", show_default=True, help="Time to come up.")
@click.option("--poll", type=Duration(), default="15s", show_default=True, help="Poll interval.")
@click.option(
    "--stale", type=Duration(), default="3m", show_default=True, help="Health older than this is none."
)
@click.option("--progress-every", type=Duration(), default="60s", hidden=True)
@click.option("--id", "rollout_id", default=None, help="Rollout id (default: random).")
@click.option("--dry-run", is_flag=True, help="Print the waves and change nothing.")
@click.pass_context
def rollout_cmd(
    ctx: click.Context,
    release: str | None,
    env: str | None,
    canary: int,
    waves: str,
    success: float,
    error: float,
    watch: float,
    update_timeout: float,
    poll: float,
    stale: float,
    progress_every: float,
    rollout_id: str | None,
    dry_run: bool,
) -> None:
    """Roll a release or a variable out in waves; stop and roll back the wave that fails its gate."""
    change = _change(release, env)
    if change is None:
        raise click.UsageError("give --release COMMIT or --env NAME=VALUE")
    try:
        percents = [float(p) for p in waves.split(",") if p.strip()]
        check_percents(percents)
    except (ValueError, FleetError):
        raise click.BadParameter(
            f"{waves!r} is not a list of increasing percentages in (0, 100], e.g. 10,50,100",
            param_hint="--waves",
        ) from None
    gate = Gate(
        success=_percent("--success", success),
        error=_percent("--error", error),
        watch_s=watch,
        update_timeout_s=update_timeout,
        stale_s=stale,
        poll_s=poll,
    )
    backend = _backend(ctx)
    current = backend.read_env(change.env_name) if change.env_name else None
    plan = plan_waves(backend.list_devices(), change, canary, percents, current)
    if not plan:
        click.echo(f"nothing to do: every device already has {change.describe()}")
        return
    if dry_run:
        for i, wave in enumerate(plan):
            click.echo(f"wave {i + 1}: {', '.join(d.name for d in wave)}")
        return
    rollout = Rollout(backend, change, gate, progress_for(sys.stdout, progress_every), rollout_id=rollout_id)
    try:
        result = rollout.run(plan)
    except KeyboardInterrupt:
        at = (rollout.current_wave or 0) + 1
        click.echo(
            f"\ninterrupted: rollout {rollout.id} stopped during wave {at}, which is left changed and "
            f"marked; revert it with: edge-agent fleet rollback --rollout {rollout.id}",
            err=True,
        )
        raise
    if not result.ok:
        assert result.failed_wave is not None
        for uuid, why in sorted(result.reasons.items()):
            click.echo(f"  {uuid[:7]}: {why}", err=True)
        raise RolloutFailed(
            f"rollout {result.rollout} stopped at wave {result.failed_wave + 1}/{result.waves_total}; "
            f"{len(result.rolled_back)} devices rolled back, {result.waves_passed} waves kept"
        )
    click.echo(
        f"rollout {result.rollout}: all {result.waves_total} waves passed; "
        f"make it the fleet's with: edge-agent fleet promote"
    )
    if result.skipped_offline:
        click.echo(
            f"{len(result.skipped_offline)} devices were offline and left unchanged "
            f"({', '.join(u[:7] for u in result.skipped_offline[:10])}); run the same rollout again to reach them"
        )


@fleet_cli.command("promote")
@click.option("--release", help="Commit to pin the fleet to (default: the marked rollout's).")
@click.option("--env", "env", help="NAME=VALUE to set fleet-wide (default: the marked rollout's).")
@click.pass_context
def promote_cmd(ctx: click.Context, release: str | None, env: str | None) -> None:
    """Move the fleet pin to the rolled-out release (or set the variable fleet-wide); devices follow it."""
    change, devices = promote(_backend(ctx), _change(release, env))
    click.echo(f"fleet now has {change.describe()}; {len(devices)} devices follow the fleet again")


@fleet_cli.command("rollback")
@click.option("--rollout", "rollout_id", default=None, help="Rollout id (needed when several are marked).")
@click.option("--wave", type=click.IntRange(min=1), default=None, help="Only this wave (1 = canary).")
@click.pass_context
def rollback_cmd(ctx: click.Context, rollout_id: str | None, wave: int | None) -> None:
    """Put the devices a rollout changed back to their previous release pin or variable value."""
    reverted = rollback(_backend(ctx), rollout_id, None if wave is None else wave - 1)
    click.echo(f"rolled back {len(reverted)} devices: {', '.join(u[:7] for u in reverted)}")
