"""``edge-agent schemas``: print or write the JSON Schemas of the wire messages and the site config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from kernel.kinds import KindRegistry


def all_schemas(kinds: KindRegistry | None = None) -> dict[str, dict[str, Any]]:
    """File stem -> JSON Schema, for the wire messages and the site configuration (with ``kinds``)."""
    from agent.config import config_json_schema
    from sync.wire import wire_json_schemas

    out = {f"wire-{name}": schema for name, schema in wire_json_schemas().items()}
    out["site-config"] = config_json_schema(kinds)
    return out


def render(schema: dict[str, Any]) -> str:
    """The exact text committed under docs/schemas (stable key order, trailing newline)."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stale_files(directory: Path) -> list[str]:
    """Schema files under ``directory`` that are missing or differ from what the code generates."""
    stale = []
    for stem, schema in all_schemas().items():
        path = directory / f"{stem}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(schema):
            stale.append(path.name)
    return stale


@click.command("schemas")
@click.option(
    "--write",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write one <name>.json per schema into this directory instead of printing them.",
)
@click.option("--check", is_flag=True, help="With --write DIR: exit 1 if the files there are stale.")
def schemas(directory: Path | None, check: bool) -> None:
    """Print (or write) the JSON Schemas of the wire protocol and the site config."""
    if directory is None:
        click.echo(json.dumps(all_schemas(), indent=2, sort_keys=True, ensure_ascii=False))
        return
    if check:
        stale = stale_files(directory)
        if stale:
            names = ", ".join(stale)
            click.echo(f"stale schemas in {directory}: {names} (run: edge-agent schemas --write {directory})")
            raise SystemExit(1)
        click.echo(f"{directory}: schemas up to date")
        return
    directory.mkdir(parents=True, exist_ok=True)
    for stem, schema in all_schemas().items():
        (directory / f"{stem}.json").write_text(render(schema), encoding="utf-8")
    click.echo(f"wrote {len(all_schemas())} schemas to {directory}")
