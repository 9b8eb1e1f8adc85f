"""``edge-agent keys``: site signing keys (kept out of :mod:`sync.signing`, which the running agent
imports, so that the agent loads no ``click``)."""

from __future__ import annotations

from pathlib import Path

import click

from sync.signing import generate_keypair


@click.group("keys")
def keys_cli() -> None:
    """Site signing keys (Ed25519)."""


@keys_cli.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="site", show_default=True, help="File stem: <name>.key and <name>.pub.")
def keys_generate(out_dir: Path, name: str) -> None:
    """Write a new private key (mode 0600) and its public key into OUT."""
    key_path, pub_path = generate_keypair(out_dir, name)
    click.echo(f"private key: {key_path} (mode 0600; keep it on the device)")
    click.echo(f"public key:  {pub_path} (register it with the centre)")
