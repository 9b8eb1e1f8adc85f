"""``edge-agent centre send|follow|sites|coordinate``: the operator's side of commands and updates."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import click

from kernel.config_base import load_yaml
from kernel.errors import AgentError, ConfigError

_BROKER = [
    click.option("--allow-plaintext", is_flag=True,
                 help="Accept an mqtt:// broker (a lab; warned at every start)."),
    click.option("--ca-file", type=click.Path(path_type=Path), default=None, help="CA of the broker (mqtts://)."),
    click.option("--cert-file", type=click.Path(path_type=Path), default=None,
                 help="Client certificate (mutual TLS)."),
    click.option("--key-file", "tls_key_file", type=click.Path(path_type=Path), default=None,
                 help="Client key (mutual TLS), mode 0600."),
]  # fmt: skip
"""The broker options every centre command that connects takes besides ``--broker``."""

_TARGETS = [
    click.option("--broker", required=True, help="mqtts://host:port (mqtt:// only with --allow-plaintext)"),
    *_BROKER,
    click.option("--key", "key_file", required=True, type=click.Path(path_type=Path),
                 help="The centre's Ed25519 private key (mode 0600)."),
    click.option("--sites", "sites_file", required=True, type=click.Path(path_type=Path),
                 help="The receiver's sites file (sites: {<id>: {public_keys: [...], groups: [...]}})."),
    click.option("--site", "one_site", default=None, help="Send to this site only."),
    click.option("--group", default=None, help="Send to the sites of this group."),
    click.option("--all", "all_sites", is_flag=True, help="Send to every registered site."),
    click.option("--prefix", default="kbe", show_default=True, help="Topic prefix."),
    click.option("--ttl", default=600.0, show_default=True, help="Seconds the command stays valid."),
    click.option("--wait", "wait_s", default=0.0, show_default=True,
                 help="Follow the replies this many seconds after sending (0: do not wait)."),
]


def _targets(f: Any) -> Any:
    for opt in reversed(_TARGETS):
        f = opt(f)
    return f


def _broker_options(f: Any) -> Any:
    for opt in reversed(_BROKER):
        f = opt(f)
    return f


def check_broker(
    source: str,
    broker: str,
    allow_plaintext: bool,
    tls_key_file: Path | None,
    what: str = "commands, replies and statuses cross the network unencrypted",
) -> None:
    """Refuse an ``mqtt://`` broker without ``--allow-plaintext`` and a client key readable by others
    (exit 2, one line), before anything connects; warn when plaintext is allowed."""
    from kernel.config_base import check_secret_file
    from sync.mqtt import refuse_plaintext, warn_plaintext

    refuse_plaintext(broker, allow_plaintext, source)
    if tls_key_file is not None:
        try:
            check_secret_file(tls_key_file)
        except ValueError as exc:
            raise ConfigError(source, [f"--key-file: {exc}"]) from exc
    warn_plaintext(broker, what)


def _select(sites_file: Path, one: str | None, group: str | None, all_sites: bool) -> list[str]:
    from sync.signing import SiteRegistry

    if sum([one is not None, group is not None, all_sites]) != 1:
        raise click.UsageError("name exactly one of --site, --group or --all")
    registry = SiteRegistry.load(sites_file)
    if one is not None:
        if one not in registry:
            raise ConfigError("--site", [f"--site: {one!r} is not in {sites_file}"])
        return [one]
    chosen = registry.sites(group)
    if not chosen:
        raise ConfigError("--group", [f"--group: no site of {sites_file} is in group {group!r}"])
    return chosen


def _link(broker: str, key_file: Path, sites_file: Path, prefix: str, tls: dict[str, Path | None]) -> Any:
    """A started CentreLink; replies and statuses are kept only when signed by a site of ``sites_file``.

    ``tls``: ``ca_file``, ``cert_file`` and ``tls_key_file`` (each may be None)."""
    from provisioning.centre.link import CentreLink
    from sync.mqtt import LinkOptions
    from sync.signing import Signer, SiteRegistry

    opts = LinkOptions(
        broker=broker,
        client_id=f"kbe-centre-{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
        ca_file=tls.get("ca_file"),
        cert_file=tls.get("cert_file"),
        key_file=tls.get("tls_key_file"),
    )
    return CentreLink(opts, Signer.from_file(key_file), SiteRegistry.load(sites_file), prefix).start()


def _send(ctx: click.Context, kind: str, body: dict[str, Any]) -> None:
    from provisioning.centre.link import is_final, make_command

    p = ctx.obj
    sites = _select(p["sites_file"], p["one_site"], p["group"], p["all_sites"])
    link = _link(p["broker"], p["key_file"], p["sites_file"], p["prefix"], p)
    try:
        ids = {}
        for site in sites:
            cmd = make_command(site, kind, body, p["ttl"])
            size = link.send(cmd)
            ids[cmd.command_id] = site
            click.echo(f"{site}: sent {kind} {cmd.command_id} ({size} bytes)")
        if p["wait_s"] > 0:
            link.wait(lambda: all(any(is_final(r) for r in link.replies_to(c)) for c in ids), p["wait_s"])
            for cid, site in ids.items():
                replies = link.replies_to(cid)
                for r in replies:
                    click.echo(f"{site}: {cid} {r.outcome} {r.phase or ''} {r.reason}".replace("  ", " "))
                if not replies:
                    click.echo(f"{site}: {cid} no reply in {p['wait_s']:.0f} s")
        else:
            time.sleep(0.5)  # let QoS 1 publishes leave before disconnecting
    finally:
        link.stop()


@click.group("centre")
def operate_cli() -> None:
    """The centre's tools: sign and send commands and updates, follow replies, list sites."""


@operate_cli.group("send")
@_targets
@click.pass_context
def send(ctx: click.Context, **opts: Any) -> None:
    """Sign and send a command or an update to one site, a group, or all sites."""
    check_broker("centre send", opts["broker"], opts["allow_plaintext"], opts["tls_key_file"])
    ctx.obj = opts


@send.command("command")
@click.argument("kind")
@click.option("--body", default="{}", help="The command body as JSON.")
@click.pass_context
def send_command(ctx: click.Context, kind: str, body: str) -> None:
    """A control command of KIND (lighting, traffic, ...)."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ConfigError("--body", [f"--body: not JSON ({exc})"]) from exc
    if not isinstance(doc, dict):
        raise ConfigError("--body", ["--body: must be a JSON object"])
    _send(ctx, kind, doc)


def config_update_body(
    new_file: Path, version: int, watch_s: float, base_file: Path | None = None, base_version: int | None = None
) -> dict[str, Any]:
    """The body of a config update: the whole file, or a merge patch against ``base_file``.

    The new config is checked here first, as ``edge-agent config check`` would (exit 2 on a problem).
    """
    from agent.config import parse_config
    from agent.update.merge import make_merge_patch, patch_expresses

    new = load_yaml(new_file)
    parse_config(new, str(new_file), new_file.parent)
    body: dict[str, Any] = {"type": "config", "version": version, "watch_s": watch_s}
    if base_file is None:
        return {**body, "config": new}
    if base_version is None:
        raise ConfigError("--base-version", ["--base-version: a patch names the version it applies to"])
    old = load_yaml(base_file)
    patch = make_merge_patch(old, new)
    if not isinstance(patch, dict) or not patch_expresses(old, new, patch):
        return {**body, "config": new}  # nulls inside the config: only the whole file says it
    return {**body, "patch": patch, "base_version": base_version}


@send.command("config")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--version", "version", required=True, type=int, help="The version this config becomes.")
@click.option("--base", "base_file", type=click.Path(path_type=Path), default=None,
              help="The config the sites run now: send a merge patch against it.")  # fmt: skip
@click.option("--base-version", type=int, default=None, help="The version of --base.")
@click.option("--watch", "watch_s", default=60.0, show_default=True, help="Health watch window (s).")
@click.pass_context
def send_config(
    ctx: click.Context, file: Path, version: int, base_file: Path | None, base_version: int | None, watch_s: float
) -> None:
    """A new site configuration FILE (whole, or as a patch with --base)."""
    _send(ctx, "update", config_update_body(file, version, watch_s, base_file, base_version))


@send.command("model")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--version", "version", required=True, type=int)
@click.option("--watch", "watch_s", default=60.0, show_default=True)
@click.pass_context
def send_model(ctx: click.Context, manifest: Path, version: int, watch_s: float) -> None:
    """A model: its MANIFEST (YAML) and the .tflite file it names beside it."""
    doc = load_yaml(manifest)
    if not isinstance(doc, dict):
        raise ConfigError(str(manifest), ["(top level): a manifest is a mapping"])
    model_file = manifest.parent / (doc.get("file") or f"{doc.get('name')}.tflite")
    try:
        content = model_file.read_bytes()
    except OSError as exc:
        raise ConfigError(str(model_file), [f"cannot read the model file: {exc.strerror}"]) from exc
    body = {
        "type": "model",
        "version": version,
        "watch_s": watch_s,
        "model": {
            "manifest": doc,
            "content_b64": base64.b64encode(content).decode(),
            "sha256": hashlib.sha256(content).hexdigest(),
        },
    }
    _send(ctx, "update", body)


@send.command("release")
@click.argument("pin")
@click.option("--version", "version", required=True, type=int)
@click.option("--watch", "watch_s", default=60.0, show_default=True)
@click.pass_context
def send_release(ctx: click.Context, pin: str, version: int, watch_s: float) -> None:
    """A release pin (the release the fleet engine should run)."""
    _send(ctx, "update", {"type": "release", "version": version, "release": pin, "watch_s": watch_s})


@send.command("rollback")
@click.option("--version", "version", required=True, type=int, help="The older version to go back to.")
@click.option("--watch", "watch_s", default=60.0, show_default=True)
@click.pass_context
def send_rollback(ctx: click.Context, version: int, watch_s: float) -> None:
    """A signed rollback to an older version the sites keep."""
    _send(ctx, "update", {"type": "config", "version": version, "rollback": True, "watch_s": watch_s})


@operate_cli.command("follow")
@click.option("--broker", required=True, help="mqtts://host:port (mqtt:// only with --allow-plaintext)")
@_broker_options
@click.option("--prefix", default="kbe", show_default=True)
@click.option("--key", "key_file", required=True, type=click.Path(path_type=Path),
              help="The centre's key (only to open the same kind of link as send).")  # fmt: skip
@click.option("--sites", "sites_file", required=True, type=click.Path(path_type=Path),
              help="The receiver's sites file: a reply is shown only when signed by its site's key.")  # fmt: skip
@click.option("--command-id", default=None, help="Only replies to this command.")
@click.option("--for", "for_s", default=0.0, help="Stop after this many seconds (0: until Ctrl-C).")
def follow(
    broker: str, allow_plaintext: bool, ca_file: Path | None, cert_file: Path | None, tls_key_file: Path | None,
    prefix: str, key_file: Path, sites_file: Path, command_id: str | None, for_s: float,
) -> None:  # fmt: skip
    """Print the sites' command replies (verified against the sites' keys) as they arrive."""
    check_broker("centre follow", broker, allow_plaintext, tls_key_file)
    tls = {"ca_file": ca_file, "cert_file": cert_file, "tls_key_file": tls_key_file}
    link = _link(broker, key_file, sites_file, prefix, tls)

    def show(r: Any) -> None:
        if command_id is None or r.command_id == command_id:
            click.echo(f"{r.site_id}: {r.command_id} {r.outcome} {r.phase or ''} {r.reason}".replace("  ", " "))

    link.on_reply(show)
    try:
        deadline = time.monotonic() + for_s if for_s > 0 else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        link.stop()


@operate_cli.command("sites")
@click.option("--db", "db_url", required=True, help="The receiver's database: postgresql://... or sqlite:///path")
@click.option("--sites", "sites_file", type=click.Path(path_type=Path), default=None,
              help="List every site of this file, also those never seen.")  # fmt: skip
@click.option("--group", default=None, help="Only the sites of this group (needs --sites).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def sites(db_url: str, sites_file: Path | None, group: str | None, as_json: bool) -> None:
    """Sites with their version, last seen, readings/s, buffer depth, rejections and health."""
    from dataclasses import asdict

    from provisioning.centre.overview import render, site_rows
    from sync.receiver_db import open_db
    from sync.signing import SiteRegistry

    names = None
    if sites_file is not None:
        names = SiteRegistry.load(sites_file).sites(group)
    elif group is not None:
        raise click.UsageError("--group needs --sites")
    db = open_db(db_url)
    try:
        rows = site_rows(db, names)
    finally:
        db.close()
    if as_json:
        for row in rows:
            click.echo(json.dumps(asdict(row)))
    else:
        click.echo(render(rows))





@operate_cli.command("coordinate")
@click.option("--corridor", "corridor_file", required=True, type=click.Path(path_type=Path),
              help="The corridor file: junctions west to east, coordinated stage, arterial groups.")  # fmt: skip
@click.option("--db", "db_url", required=True, help="The receiver's database: postgresql://... or sqlite:///path")
@click.option("--broker", default=None,
              help="mqtts://host:port (mqtt:// only with --allow-plaintext; not needed with --dry-run)")
@_broker_options
@click.option("--key", "key_file", default=None, type=click.Path(path_type=Path),
              help="The centre's Ed25519 private key (mode 0600).")  # fmt: skip
@click.option("--sites", "sites_file", default=None, type=click.Path(path_type=Path),
              help="The receiver's sites file: every junction's site must be in it.")  # fmt: skip
@click.option("--prefix", default="kbe", show_default=True, help="Topic prefix.")
@click.option("--ttl", default=120.0, show_default=True, help="Seconds each command stays valid.")
@click.option("--minutes", default=None, type=float, help="Counts of the last N minutes (default: the file's).")
@click.option("--state", "state_file", default=None, type=click.Path(path_type=Path),
              help="The last plan sent (default: <corridor>.plan.json beside the corridor file).")  # fmt: skip
@click.option("--wait", "wait_s", default=10.0, show_default=True, help="Follow the replies this many seconds.")
@click.option("--every", "every_s", default=0.0, help="Repeat every S seconds until Ctrl-C (0: once).")
@click.option("--valid-for", "valid_for_s", default=0.0, show_default=True,
              help="Seconds each junction runs the plan before returning to its configured one (0: until replaced).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print the next plan; send nothing, keep nothing.")
def coordinate(
    corridor_file: Path, db_url: str, broker: str | None, allow_plaintext: bool, ca_file: Path | None,
    cert_file: Path | None, tls_key_file: Path | None, key_file: Path | None, sites_file: Path | None,
    prefix: str, ttl: float, minutes: float | None, state_file: Path | None, wait_s: float, every_s: float,
    valid_for_s: float, dry_run: bool,
) -> None:  # fmt: skip
    """A corridor's next coordination plan from its junctions' loop counts, sent to each junction."""
    from provisioning.centre import corridor as cor
    from sync.signing import SiteRegistry

    if broker is not None:
        check_broker("centre coordinate", broker, allow_plaintext, tls_key_file)
    tls = {"ca_file": ca_file, "cert_file": cert_file, "tls_key_file": tls_key_file}
    c = cor.load_corridor(corridor_file)
    state = state_file or cor.state_path(corridor_file)
    if not dry_run:
        missing = [o for o, v in (("--broker", broker), ("--key", key_file), ("--sites", sites_file)) if v is None]
        if missing:
            raise click.UsageError(f"{', '.join(missing)}: needed to send (or use --dry-run)")
        assert sites_file is not None
        registry = SiteRegistry.load(sites_file)
        unknown = sorted({j.site for j in c.file.junctions if j.site not in registry})
        if unknown:
            raise ConfigError(str(sites_file), [f"site {s!r} of {corridor_file.name} is not registered" for s in unknown])
    window_s = 60.0 * (minutes if minutes is not None else c.file.window_min)
    while True:
        try:
            _coordinate_once(c, db_url, window_s, state, dry_run,
                             (broker, key_file, sites_file, prefix, ttl, wait_s, tls, valid_for_s))  # fmt: skip
        except AgentError as exc:
            if every_s <= 0:
                raise
            click.echo(f"{c.file.name}: {exc}", err=True)
        if every_s <= 0:
            return
        time.sleep(every_s)


def _coordinate_once(
    c: Any, db_url: str, window_s: float, state: Path, dry_run: bool, send: tuple[Any, ...]
) -> None:
    from provisioning.centre import corridor as cor
    from provisioning.centre.link import is_final, make_command
    from sync.receiver_db import open_db

    db = open_db(db_url)
    try:
        counts = cor.read_counts(db, c, time.time() - window_s)
    finally:
        db.close()
    previous = cor.load_state(state) or cor.configured_plan(c)
    plan = cor.next_corridor_plan(c, counts, previous, time.time())
    for line in cor.describe(c, plan, counts):
        click.echo(line)
    if dry_run:
        return
    broker, key_file, sites_file, prefix, ttl, wait_s, tls, valid_for_s = send
    link = _link(broker, key_file, sites_file, prefix, tls)
    try:
        ids = {}
        for site, body in cor.command_bodies(c, plan, valid_for_s):
            cmd = make_command(site, "traffic", body, ttl)
            link.send(cmd)
            ids[cmd.command_id] = f"{site}/{body['intersection']}"
            click.echo(f"{ids[cmd.command_id]}: sent coordinate {cmd.command_id}")
        cor.save_state(state, plan)
        if wait_s > 0:
            link.wait(lambda: all(any(is_final(r) for r in link.replies_to(i)) for i in ids), wait_s)
            for cid, who in ids.items():
                finals = [r for r in link.replies_to(cid) if is_final(r)]
                text = f"{finals[-1].outcome} {finals[-1].reason}" if finals else f"no reply in {wait_s:.0f} s"
                click.echo(f"{who}: {cid} {text}")
        else:
            time.sleep(0.5)  # let QoS 1 publishes leave before disconnecting
    finally:
        link.stop()
