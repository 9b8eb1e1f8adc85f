"""``edge-agent demo``: an emulated site, a broker, the reference receiver and the agent, live.

It starts the emulators of ``hil/rigs/demo-site.yaml`` (Modbus TCP gateway and RS-485 line, serial
particulate sensor, GPS, cabinet GPIO), uses the Mosquitto on 127.0.0.1:1883 if it answers or
starts a private one, runs the receiver on SQLite and the agent as separate processes, and prints
every reading the receiver stores as it arrives. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import click
import yaml

from hil.devices import EmulatorBank
from hil.procs import REPO, Broker, ManagedProcess, ProcessSet, agent_argv, agent_env, free_port, port_open
from hil.rig import AgentSettings, load_rig
from kernel.errors import AgentError

DEMO_RIG = REPO / "hil" / "rigs" / "demo-site.yaml"
PREFIX = "kbe-demo"


def _site_config(
    rig_site: str, devices: list[dict[str, Any]], broker_url: str, key: Path, work: Path, health_port: int
) -> dict[str, Any]:
    return {
        "version": 1,
        "site": {
            "id": rig_site,
            "name": "Demo site (emulated)",
            "location": {"lat": 21.1861, "lon": 106.0763},
        },
        "devices": devices,
        "sync": {
            "broker": broker_url,
            "allow_plaintext": True,  # a local demo broker on the loopback
            "centre_public_keys": [str(key.parent / "centre.pub")],
            "signing_key_file": str(key),
            "topic_prefix": PREFIX,
            "client_id": f"{PREFIX}-{rig_site}-{int(time.time())}",
            "batch": {"max_age_s": 0.5},
            "keepalive_s": 10,
        },
        "store": {"path": str(work / "agent" / "store.db")},
        "health": {"listen": f"127.0.0.1:{health_port}"},
    }


def _new_rows(db_path: Path, after: int) -> list[tuple[Any, ...]]:
    if not db_path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return []
    try:
        return db.execute(
            "SELECT seq, device, point, value, value_text, unit, quality FROM readings WHERE seq > ? ORDER BY seq "
            "LIMIT 500",
            (after,),
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()


def _fmt(row: tuple[Any, ...]) -> str:
    seq, device, point, value, text, unit, quality = row
    shown = (
        text
        if value is None
        else (f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else value)
    )
    flag = "" if quality == 0 else ("  (uncertain)" if quality == 1 else "  (BAD)")
    return f"  #{seq:<6} {device:<12} {point:<22} {shown} {unit}{flag}"


async def run_demo(work: Path, seconds: float | None) -> None:
    """Run the demo until Ctrl-C (or ``seconds``)."""
    rig = load_rig(DEMO_RIG)
    procs = ProcessSet()
    bank = EmulatorBank(rig)
    try:
        await bank.start()
        if port_open(1883):
            broker_url = "mqtt://127.0.0.1:1883"
            click.echo("broker:   the Mosquitto already running on 127.0.0.1:1883")
        elif shutil.which("mosquitto"):
            broker = Broker(work)
            procs.add(broker)
            broker.start()
            broker_url = broker.url
            click.echo(f"broker:   a private Mosquitto on {broker_url}")
        else:
            raise AgentError(
                "no MQTT broker: nothing answers on 127.0.0.1:1883 and mosquitto is not installed "
                "(sudo apt-get install mosquitto)"
            )
        from sync.signing import generate_keypair

        key, pub = generate_keypair(work / "keys", "site")
        centre_key, _centre_pub = generate_keypair(work / "keys", "centre")
        sites = work / "sites.yaml"
        sites.write_text(yaml.safe_dump({"sites": {rig.site_id: {"public_keys": [str(pub)]}}}))
        centre = work / "centre.db"
        receiver = procs.add(
            ManagedProcess(
                "receiver",
                agent_argv(
                    "receiver",
                    "--broker",
                    broker_url,
                    "--db",
                    f"sqlite:///{centre}",
                    "--sites",
                    str(sites),
                    "--signing-key",
                    str(centre_key),
                    "--allow-plaintext",
                    "--prefix",
                    PREFIX,
                    "--group",
                    f"{PREFIX}-rx",
                ),
                work / "logs" / "receiver.log",
                agent_env(),
            )
        )
        receiver.start()
        health_port = free_port()
        cfg = _site_config(
            rig.site_id, bank.site_devices(AgentSettings()), broker_url, key, work, health_port
        )
        cfg_path = work / "site.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        agent = procs.add(
            ManagedProcess(
                "agent",
                agent_argv("run", "--config", str(cfg_path)),
                work / "logs" / "agent.log",
                agent_env(),
            )
        )
        agent.start()
        click.echo(f"emulated: {len(rig.devices)} devices ({', '.join(d.name for d in rig.devices)})")
        click.echo(
            f"agent:    site {rig.site_id}, config {cfg_path}, health http://127.0.0.1:{health_port}/health"
        )
        click.echo(f"receiver: {centre} (table readings), logs in {work / 'logs'}")
        click.echo("readings stored at the receiver, live (Ctrl-C stops everything):")
        last = 0
        total = 0
        started = time.monotonic()
        while seconds is None or time.monotonic() - started < seconds:
            await asyncio.sleep(1.0)
            for name, proc in (("agent", agent), ("receiver", receiver)):
                if not proc.running():
                    raise AgentError(f"the {name} stopped:\n{proc.tail()}")
            rows = await asyncio.to_thread(_new_rows, centre, last)
            for row in rows:
                click.echo(_fmt(row))
            if rows:
                last = rows[-1][0]
                total += len(rows)
        click.echo(f"{total} readings stored at the receiver")
    finally:
        procs.stop_all()
        await bank.close()


@click.command("demo")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("demo-run"),
    show_default=True,
    help="Where the demo writes its config, keys, databases and logs (wiped at start).",
)
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: until Ctrl-C).")
def demo_cmd(workdir: Path, seconds: float | None) -> None:
    """Run the agent against an emulated site with a broker and the reference receiver."""
    work = workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    try:
        asyncio.run(run_demo(work, seconds))
    except KeyboardInterrupt:
        click.echo("stopped; everything the demo started is stopped too")
