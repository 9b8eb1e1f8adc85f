"""``edge-agent centre ...``: the site CA, one-time tokens and the enrolment service."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from provisioning.centre.ca import CentreFiles, ca_init, issue
from provisioning.centre.tokens import TokenBook, parse_ttl
from sync.mqtt import LinkOptions

_DIR = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), required=True,
                    help="The centre folder (ca.pem, ca.key, centre.key, tokens.json).")  # fmt: skip


@click.group("centre")
def centre_cli() -> None:
    """The centre's side: site CA, enrolment tokens, enrolment service."""


@centre_cli.group("ca")
def ca_group() -> None:
    """The site CA."""


@ca_group.command("init")
@_DIR
@click.option("--name", default="kinhbac-edge site CA", show_default=True)
def ca_init_cmd(directory: Path, name: str) -> None:
    """Create the site CA and the centre's answer/command key in DIR."""
    files = ca_init(directory, name)
    click.echo(f"CA certificate: {files.ca_cert} (give it to every site and broker)")
    click.echo(f"CA key:         {files.ca_key} (mode 0600; keep it offline when not enrolling)")
    click.echo(f"centre key:     {files.centre_key} (mode 0600); public half {files.centre_pub} goes to every site")


@ca_group.command("issue")
@_DIR
@click.option("--cn", required=True, help="Certificate name: the broker's host, or a receiver's MQTT user.")
@click.option("--host", "hosts", multiple=True, help="DNS name or IP of a broker (makes a server certificate).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def ca_issue_cmd(directory: Path, cn: str, hosts: tuple[str, ...], out_dir: Path) -> None:
    """Issue <CN>.pem and <CN>.key: a broker's server certificate (--host) or a client certificate."""
    cert, key = issue(CentreFiles(directory), cn, out_dir, hosts)
    click.echo(f"certificate {cert}, key {key} (mode 0600)")


@centre_cli.group("token")
def token_group() -> None:
    """One-time enrolment tokens."""


@token_group.command("new")
@_DIR
@click.option("--site", "site_id", required=True)
@click.option("--ttl", default="7d", show_default=True, help="Lifetime: 30m, 12h, 7d.")
def token_new_cmd(directory: Path, site_id: str, ttl: str) -> None:
    """Issue a one-time token for SITE (printed once; only its hash is kept)."""

    from sync.wire_base import SITE_RE

    if not SITE_RE.match(site_id):
        raise click.BadParameter(f"{site_id!r} is not a valid site id", param_hint="--site")
    token = TokenBook(CentreFiles(directory).tokens).new(site_id, parse_ttl(ttl))
    click.echo(token)


@centre_cli.command("enrol")
@_DIR
@click.option("--broker", required=True,
              help="mqtts://host:port of the mTLS listener (mqtt:// only with --allow-plaintext).")
@click.option("--allow-plaintext", is_flag=True, help="Accept an mqtt:// broker (a lab; warned at every start).")
@click.option("--sites", "sites_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The receivers' site registry, updated as sites enrol.")  # fmt: skip
@click.option("--prefix", default="kbe", show_default=True)
@click.option("--client-id", default="kbe-enrol-service", show_default=True)
@click.option("--ca-file", type=click.Path(path_type=Path), default=None, help="CA of the broker.")
@click.option("--cert-file", type=click.Path(path_type=Path), default=None, help="Client certificate.")
@click.option("--key-file", type=click.Path(path_type=Path), default=None, help="Client key, mode 0600.")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def enrol_cmd(directory: Path, broker: str, allow_plaintext: bool, sites_file: Path, prefix: str, client_id: str,
              ca_file: Path | None, cert_file: Path | None, key_file: Path | None, log_level: str) -> None:  # fmt: skip
    """Answer the sites' enrolment requests until SIGTERM or Ctrl-C."""
    from provisioning.centre.operate import check_broker
    from provisioning.centre.service import EnrolService

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_broker("centre enrol", broker, allow_plaintext, key_file, "one-time tokens and certificates cross the "
                 "network unencrypted")  # fmt: skip
    service = EnrolService(CentreFiles(directory), sites_file, prefix)
    opts = LinkOptions(broker=broker, client_id=client_id, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    link = service.connect(opts)
    logging.getLogger("kbe.enrol.centre").info("enrolment service on %s, registry %s", broker, sites_file)
    try:
        stop.wait()
    finally:
        link.stop()
        logging.getLogger("kbe.enrol.centre").info("enrolment service stopped: %s", dict(service.counters))


def _add_operator_commands() -> None:
    """``send``, ``follow`` and ``sites`` (provisioning.centre.operate) join the same group."""
    from provisioning.centre.operate import operate_cli

    for command in operate_cli.commands.values():
        centre_cli.add_command(command)


_add_operator_commands()
