"""``edge-agent provision``: the technician's tools on site (bus scan, commissioning checks)."""

from __future__ import annotations

import click

from provisioning.check_cli import check_cmd
from provisioning.scan_cli import scan_cmd


@click.group("provision")
def provision() -> None:
    """Technician tools: scan an RS-485 bus, run the commissioning checks."""


provision.add_command(scan_cmd)
provision.add_command(check_cmd)
