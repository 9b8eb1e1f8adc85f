"""``edge-agent store status|rejected|resend``: look at a site's buffer beside the running agent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from kernel.errors import AgentError
from sync.store import StoreFile


def _store_path(config_file: Path) -> Path:
    from agent.config import load_config

    return Path(load_config(config_file).store.path)


_CONFIG = click.option("--config", "config_file", required=True, type=click.Path(path_type=Path),
                       help="The site config (its store.path is read).")  # fmt: skip


@click.group("store")
def store_cli() -> None:
    """The site's SQLite buffer: what waits, what the centre refused, sending refused batches again."""


@store_cli.command("status")
@_CONFIG
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def store_status(config_file: Path, as_json: bool) -> None:
    """What waits to be sent, how old the oldest is, what was dropped or set aside."""
    sf = StoreFile(_store_path(config_file))
    try:
        s = sf.summary()
    finally:
        sf.close()
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    oldest = s["oldest_waiting_ts"]
    age = f"{time.time() - float(oldest):.0f} s ago" if isinstance(oldest, int | float) else "-"
    click.echo(f"store {s['path']}: {s['bytes']} bytes, last seq {s['last_seq']}")
    click.echo(f"waiting: {s['waiting']} {s['waiting_by_priority']}, oldest {age}")
    click.echo(f"dropped by the size cap: {s['dropped'] or 0}")
    click.echo(f"set aside after the centre refused them: {s['rejected_readings']} readings in "
               f"{s['rejected_batches']} batches (edge-agent store rejected)")  # fmt: skip


@store_cli.command("rejected")
@_CONFIG
@click.option("--batch", "batch_id", default=None, help="Show the readings of this batch.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100_000))
def store_rejected(config_file: Path, batch_id: str | None, limit: int) -> None:
    """List the batches the centre refused (and why), or the readings of one of them."""
    sf = StoreFile(_store_path(config_file))
    try:
        if batch_id is None:
            batches = sf.rejected_batches()
            if not batches:
                click.echo("no batch is set aside")
            for b in batches:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(b.rejected_at))
                click.echo(f"{b.batch_id}  {b.count} readings (seq {b.first_seq}..{b.last_seq})  {when} UTC  "
                           f"{b.reason}")  # fmt: skip
            return
        rows = sf.rejected_readings(batch_id, limit)
        if not rows:
            raise AgentError(f"no batch {batch_id!r} is set aside (edge-agent store rejected lists them)")
        for r in rows:
            x = r.reading
            click.echo(f"{r.seq}  {x.device}.{x.point} = {x.value!r} {x.unit}  ts {x.ts:.3f}")
    finally:
        sf.close()


@store_cli.command("resend")
@_CONFIG
@click.argument("batch_ids", nargs=-1)
@click.option("--all", "resend_all", is_flag=True, help="Every batch set aside.")
def store_resend(config_file: Path, batch_ids: tuple[str, ...], resend_all: bool) -> None:
    """Put refused batches back in the queue, after the cause is fixed (a key registered, the centre updated)."""
    if not batch_ids and not resend_all:
        raise click.UsageError("name the batches to send again, or give --all")
    sf = StoreFile(_store_path(config_file), write=True)
    try:
        known = {b.batch_id for b in sf.rejected_batches()}
        ids = sorted(known) if resend_all else list(batch_ids)
        unknown = [b for b in ids if b not in known]
        if unknown:
            raise AgentError(f"not set aside: {', '.join(unknown)} (edge-agent store rejected lists them)")
        moved = sf.resend(ids)
    finally:
        sf.close()
    click.echo(f"{moved} readings of {len(ids)} batches are queued again; a running agent sends them within "
               "sync.keepalive_s")  # fmt: skip
