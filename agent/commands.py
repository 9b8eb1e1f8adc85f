"""The ``edge-agent`` command line in ``click``: the group, its subcommands (each imported when
used) and ``config``; :func:`agent.cli.main` runs ``edge-agent run --config FILE`` without it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from agent.cli import run_site_file

# Subcommands that live with their package: "module:attribute" of a click command or group.
SUBCOMMANDS: dict[str, str] = {
    "centre": "provisioning.centre.cli:centre_cli",
    "demo": "hil.demo:demo_cmd",
    "hil": "hil.cli:hil_cli",
    "keys": "sync.keys_cli:keys_cli",
    "lighting": "agent.lighting_cli:lighting_cli",
    "modbus": "drivers.modbus.cli:modbus",
    "provision": "provisioning.cli:provision",
    "receiver": "sync.receiver:receiver_cmd",
    "schemas": "agent.schemas:schemas",
    "store": "agent.store_cli:store_cli",
    "firmware-test": "firmware_tests.cli:firmware_test",
    "fleet": "provisioning.fleet.cli:fleet_cli",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used (fast start on a small board)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *SUBCOMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS:
            module, attr = SUBCOMMANDS[cmd_name].split(":")
            cmd = getattr(importlib.import_module(module), attr)
            assert isinstance(cmd, click.Command)
            return cmd
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kinhbac-edge", prog_name="edge-agent")
def cli() -> None:
    """kinhbac-edge: the smart-city edge agent."""


@cli.group()
def config() -> None:
    """Check a site config or print its JSON Schema."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; print every problem with its path and exit 2 if there is one."""
    from agent.config import load_config

    cfg = load_config(file)
    click.echo(f"{file}: ok (site {cfg.site.id}, {len(cfg.devices)} devices)")


@config.command("kinds")
def config_kinds() -> None:
    """List the registered device kinds and the module of each (nothing is imported)."""
    from kernel.kinds import KindRegistry

    kinds = KindRegistry()
    for name in kinds.names():
        click.echo(f"{name:<12} {kinds.ref(name)}")


@config.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the site config."""
    from agent.config import config_json_schema

    click.echo(json.dumps(config_json_schema(), indent=2, ensure_ascii=False))


@cli.command("run")
@click.option(
    "--config", "config_file", required=True, type=click.Path(path_type=Path), help="Site config YAML."
)
def run_cmd(config_file: Path) -> None:
    """Run the agent for one site until SIGTERM or Ctrl-C."""
    run_site_file(config_file)
