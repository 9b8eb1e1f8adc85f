"""``edge-agent demo``: an emulated site, a broker, the reference receiver and the agent, live.

It starts the emulators of ``hil/rigs/demo-site.yaml`` (Modbus TCP gateway and RS-485 line, serial
particulate sensor, GPS, cabinet GPIO), uses the Mosquitto on 127.0.0.1:1883 if it answers or
starts a private one, runs the receiver on SQLite and the agent as separate processes, and prints
a live table, one row per device (last values with units, poll success, age), with the agent's buffer
and uplink state (``--lines``: one line per stored reading). Ctrl-C stops everything it started; a
watchdog process (hil/watchdog.py) stops the children even if the demo itself is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from hil.devices import EmulatorBank
from hil.procs import REPO, Broker, ManagedProcess, ProcessSet, agent_argv, agent_env, free_port, port_open
from hil.rig import AgentSettings, load_rig
from hil.watchdog import Watchdog
from kernel.errors import AgentError

DEMO_RIG = REPO / "hil" / "rigs" / "demo-site.yaml"
PREFIX = "kbe-demo"


def _site_config(
    rig_site: str,
    devices: list[dict[str, Any]],
    broker_url: str,
    key: Path,
    work: Path,
    health_port: int,
    prefix: str = PREFIX,
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
            "topic_prefix": prefix,
            "client_id": f"{prefix}-{rig_site}-{int(time.time())}",
            "batch": {"max_age_s": 0.5},
            "keepalive_s": 10,
        },
        "store": {"path": str(work / "agent" / "store.db")},
        "health": {"listen": f"127.0.0.1:{health_port}"},
    }


ROWS_SQL = (
    "SELECT seq, device, point, value, value_text, unit, quality, ts, priority FROM readings "
    "WHERE seq > ? ORDER BY seq LIMIT 2000"
)


def _new_rows(db_path: Path, after: int) -> list[tuple[Any, ...]]:
    if not db_path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return []
    try:
        return db.execute(ROWS_SQL, (after,)).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()


def _shown(value: Any, text: Any) -> str:
    if value is None:
        return str(text)
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _fmt(row: tuple[Any, ...]) -> str:
    seq, device, point, value, text, unit, quality = row[:7]
    flag = "" if quality == 0 else ("  (uncertain)" if quality == 1 else "  (BAD)")
    return f"  #{seq:<6} {device:<12} {point:<22} {_shown(value, text)} {unit}{flag}"


def _http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - the agent's loopback endpoint
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:  # 503: an unhealthy agent still answers with its report
        return str(exc.read().decode())
    except (OSError, ValueError):
        return None


_POLLS = re.compile(r'modbus_polls_total\{([^}]*)\} ([0-9.e+]+)')


def modbus_polls(metrics_text: str) -> dict[str, tuple[float, float]]:
    """device -> (polls ok, polls failed) from the agent's /metrics text."""
    out: dict[str, list[float]] = {}
    for labels, value in _POLLS.findall(metrics_text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        dev = lab.get("device")
        if dev is None:
            continue
        pair = out.setdefault(dev, [0.0, 0.0])
        pair[0 if lab.get("result") == "ok" else 1] += float(value)
    return {d: (ok, bad) for d, (ok, bad) in out.items()}


@dataclass
class DeviceView:
    """What the demo table shows about one device."""

    name: str
    kind: str
    points: dict[str, tuple[str, str]] = field(default_factory=dict)  # point -> (value, unit), in order
    good: int = 0
    total: int = 0
    last_ts: float | None = None
    polls: tuple[float, float] | None = None  # Modbus: (ok, failed) from the agent's metrics

    @property
    def success(self) -> float | None:
        """Share of polls that succeeded (Modbus), else of readings stored GOOD."""
        if self.polls is not None and sum(self.polls) > 0:
            return self.polls[0] / sum(self.polls)
        return self.good / self.total if self.total else None


@dataclass
class DemoState:
    """The live view: one entry per device, the agent's buffer and sync state, the receiver's rows."""

    devices: dict[str, DeviceView]
    stored: int = 0
    last_seq: int = 0
    health: dict[str, Any] | None = None

    @classmethod
    def for_rig(cls, rig: Any) -> DemoState:
        """Rows for the rig's devices, in the rig's order."""
        kinds = {d.name: getattr(d, "profile", None) or getattr(d, "sensor", None) or d.kind for d in rig.devices}
        return cls({name: DeviceView(name, str(kind)) for name, kind in kinds.items()})

    def add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Take the receiver's new rows (as ROWS_SQL selects them)."""
        for seq, device, point, value, text, unit, quality, ts, priority in rows:
            view = self.devices.get(device)
            if view is None:
                view = self.devices[device] = DeviceView(device, "agent" if device == "agent" else "")
            view.points[point] = (_shown(value, text), unit or "")
            if priority == 2:  # telemetry
                view.total += 1
                view.good += 1 if quality == 0 else 0
            view.last_ts = ts if view.last_ts is None else max(view.last_ts, ts)
            self.stored += 1
            self.last_seq = max(self.last_seq, seq)

    def add_metrics(self, text: str) -> None:
        """Poll counters from the agent's /metrics."""
        for dev, polls in modbus_polls(text).items():
            if dev in self.devices:
                self.devices[dev].polls = polls


MAX_POINTS = 4


def render_table(state: DemoState, now: float) -> Any:
    """The rich renderable: the device table and a line on the buffer and the uplink."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="kinhbac-edge demo: readings at the centre", expand=True)
    table.add_column("device", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    # One line per device: the values take the width left and are cut short with an ellipsis.
    table.add_column("last values", no_wrap=True, overflow="ellipsis", ratio=1)
    table.add_column("poll ok", justify="right", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    for view in state.devices.values():
        items = list(view.points.items())
        shown = ", ".join(f"{p} {v}{(' ' + u) if u else ''}" for p, (v, u) in items[:MAX_POINTS])
        if len(items) > MAX_POINTS:
            shown += f" (+{len(items) - MAX_POINTS})"
        ok = view.success
        age = now - view.last_ts if view.last_ts is not None else None
        table.add_row(
            view.name,
            view.kind,
            shown or "-",
            "-" if ok is None else f"{100 * ok:.0f} %",
            "-" if age is None else f"{max(age, 0):.0f} s",
            style="red" if age is None or age > 60 or (ok is not None and ok < 0.9) else None,
        )
    h = state.health or {}
    buf, sync = h.get("buffer") or {}, h.get("sync") or {}
    if h:
        link = "connected" if sync.get("connected") else f"DISCONNECTED ({sync.get('last_error') or 'no broker'})"
        footer = (
            f"buffer {buf.get('depth', '?')} readings waiting; uplink {link}, {sync.get('in_flight', 0)} "
            f"batches in flight, {sync.get('acked_readings', 0)} acknowledged; centre holds {state.stored} rows"
        )
    else:
        footer = f"agent health not answering yet; centre holds {state.stored} rows"
    return Group(table, Text(footer), Text("Ctrl-C stops everything the demo started.", style="dim"))


async def _poll(state: DemoState, centre: Path, health_url: str) -> list[tuple[Any, ...]]:
    """Read the receiver's new rows and the agent's health and metrics into ``state``."""
    rows = await asyncio.to_thread(_new_rows, centre, state.last_seq)
    state.add_rows(rows)
    text = await asyncio.to_thread(_http_get, f"{health_url}/health")
    if text:
        with contextlib.suppress(ValueError):
            state.health = json.loads(text)
    metrics = await asyncio.to_thread(_http_get, f"{health_url}/metrics")
    if metrics:
        state.add_metrics(metrics)
    return rows


class _Children:
    """The demo's processes, each also registered with the watchdog."""

    def __init__(self, watchdog: Watchdog | None) -> None:
        self.procs = ProcessSet()
        self.watchdog = watchdog

    def start(self, proc: ManagedProcess) -> ManagedProcess:
        self.procs.add(proc)
        proc.start()
        if self.watchdog is not None:
            self.watchdog.add(proc.pid)
        return proc

    def stop_all(self) -> None:
        pids = [p.pid for p in self.procs.procs]
        self.procs.stop_all()
        if self.watchdog is not None:
            for pid in pids:
                self.watchdog.forget(pid)


async def run_demo(work: Path, seconds: float | None, lines: bool = False, watchdog: Watchdog | None = None) -> None:
    """Run the demo until Ctrl-C (or ``seconds``): a live table, or ``lines`` one line per reading."""
    rig = load_rig(DEMO_RIG)
    children = _Children(watchdog)
    bank = EmulatorBank(rig)
    try:
        await bank.start()
        if port_open(1883):
            broker_url = "mqtt://127.0.0.1:1883"
            click.echo("broker:   the Mosquitto already running on 127.0.0.1:1883")
        elif shutil.which("mosquitto"):
            broker = Broker(work)
            children.procs.add(broker)
            broker.start()
            if watchdog is not None:
                watchdog.add(broker.pid)
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
        # Topics of this demo only: two demos on the shared broker must not take each other's batches.
        prefix = f"{PREFIX}-{os.getpid()}"
        receiver = children.start(
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
                    prefix,
                    "--group",
                    f"{prefix}-rx",
                ),
                work / "logs" / "receiver.log",
                agent_env(),
            )
        )
        health_port = free_port()
        cfg = _site_config(
            rig.site_id, bank.site_devices(AgentSettings()), broker_url, key, work, health_port, prefix
        )
        cfg_path = work / "site.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        agent = children.start(
            ManagedProcess(
                "agent",
                agent_argv("run", "--config", str(cfg_path)),
                work / "logs" / "agent.log",
                agent_env(),
            )
        )
        health_url = f"http://127.0.0.1:{health_port}"
        click.echo(f"emulated: {len(rig.devices)} devices ({', '.join(d.name for d in rig.devices)})")
        click.echo(f"agent:    site {rig.site_id}, config {cfg_path}, health {health_url}/health")
        click.echo(f"receiver: {centre} (table readings), logs in {work / 'logs'}")
        state = DemoState.for_rig(rig)
        started = time.monotonic()

        def check_children() -> None:
            for name, proc in (("agent", agent), ("receiver", receiver)):
                if not proc.running():
                    raise AgentError(f"the {name} stopped:\n{proc.tail()}")

        if lines:
            click.echo("readings stored at the receiver, live (Ctrl-C stops everything):")
            while seconds is None or time.monotonic() - started < seconds:
                await asyncio.sleep(1.0)
                check_children()
                for row in await _poll(state, centre, health_url):
                    click.echo(_fmt(row))
        else:
            from rich.console import Console
            from rich.live import Live

            try:
                with Live(render_table(state, time.time()), console=Console(), refresh_per_second=2) as live:
                    while seconds is None or time.monotonic() - started < seconds:
                        await asyncio.sleep(1.0)
                        check_children()
                        await _poll(state, centre, health_url)
                        live.update(render_table(state, time.time()))
            finally:
                click.echo("")  # below the table, also on Ctrl-C
        click.echo(f"{state.stored} readings stored at the receiver")
    finally:
        await asyncio.to_thread(children.stop_all)
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
@click.option("--lines", is_flag=True, help="One line per stored reading instead of the live table.")
def demo_cmd(workdir: Path, seconds: float | None, lines: bool) -> None:
    """Run the agent against an emulated site with a broker and the reference receiver."""
    if not lines:
        try:
            import rich  # noqa: F401
        except ImportError:
            raise AgentError(
                "the live table needs rich (pip install 'kinhbac-edge[dev]'); or run: edge-agent demo --lines"
            ) from None
    work = workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    # Stops the children's process groups even if this process is killed outright.
    watchdog = Watchdog(agent_env(), tag=str(work))
    try:
        asyncio.run(_main(work, seconds, lines, watchdog))
    except KeyboardInterrupt:
        pass
    finally:
        watchdog.close()  # the prompt comes back only once everything is stopped
    click.echo("stopped; everything the demo started is stopped too")


async def _main(work: Path, seconds: float | None, lines: bool, watchdog: Watchdog) -> None:
    """The demo with SIGTERM and SIGHUP treated like Ctrl-C."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if task is not None:
            loop.add_signal_handler(sig, task.cancel)
    try:
        await run_demo(work, seconds, lines, watchdog)
    except asyncio.CancelledError:
        pass
