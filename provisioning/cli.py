"""``edge-agent provision``: the technician's commands, one module each."""

from __future__ import annotations

import click

from provisioning.identity import provision_init_cmd


@click.group("provision")
def provision_cli() -> None:
    """Technician tools on site: identity and enrolment."""


provision_cli.add_command(provision_init_cmd, "init")
