"""The commissioning checks: each says in plain words what is wrong and what to do.

The checks read a :class:`SiteState`: the site config plus what acquisition delivered (a
:class:`~agent.commissioning.live.LiveTap` and the metrics). The running agent's page passes its
own state; ``edge-agent provision check`` first runs the site's acquisition sources for a short
while to fill one (:func:`sample_site`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.commissioning.live import LiveTap
from kernel.clock import Clock
from kernel.i18n import N_, Message
from kernel.kinds import KindRegistry
from kernel.metrics import Metrics
from kernel.readings import ClockQuality, Quality
from kernel.source import RunContext
from sync.store import waiting_readings

if TYPE_CHECKING:
    from agent.config import SiteConfig

CONTROL_KINDS = ("lighting", "traffic")  # never driven by a check: they switch real outputs
OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
MIN_FREE_BYTES = 512 * 1024 * 1024
CERT_WARN_DAYS = 30
STALE_S = 30.0


@dataclass
class CheckResult:
    """One check's verdict, its words, and (for devices) the points' recent values."""

    id: str
    status: str
    title: Message
    detail: Message
    advice: Message | None = None
    points: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SiteState:
    """What the checks look at."""

    cfg: SiteConfig
    tap: LiveTap
    metrics: Metrics
    clock: Clock
    store_stats: Callable[[], Any] | None = None
    sync_health: Callable[[], dict[str, Any] | None] | None = None
    task_states: Callable[[], dict[str, Any]] | None = None
    sampled_s: float = 0.0


# -- devices ----------------------------------------------------------------------------------------
MODBUS_ERRORS = {
    "timeout": (
        N_("{device} does not answer."),
        N_(
            "Check its power, the A/B wiring and termination, and that unit id, baud rate and parity "
            "match the config (edge-agent provision scan finds them)."
        ),
    ),
    "frame": (
        N_("{device} answers with garbled frames."),
        N_("Check the termination resistors and the cable shield; two devices may share its unit id."),
    ),
    "exception": (
        N_("{device} refuses the requests (Modbus exception {code})."),
        N_("Check that the profile matches the device's model and firmware."),
    ),
}


def device_failure(state: SiteState, name: str, driver: str) -> tuple[Message, Message]:
    """Why a device delivers nothing, in plain words, and what to do."""
    if driver == "modbus":
        labels = {"device": name}
        kinds = {
            k: state.metrics.get("modbus_errors_total", {**labels, "kind": k}) for k in ("timeout", "frame")
        }
        codes = {
            c: state.metrics.get("modbus_errors_total", {**labels, "kind": f"exception_{c}"})
            for c in range(1, 12)
        }
        worst_code = max(codes, key=lambda c: codes[c])
        if kinds["timeout"] >= max(kinds["frame"], codes[worst_code]) and kinds["timeout"] > 0:
            what, todo = MODBUS_ERRORS["timeout"]
        elif kinds["frame"] >= codes[worst_code] and kinds["frame"] > 0:
            what, todo = MODBUS_ERRORS["frame"]
        elif codes[worst_code] > 0:
            what, todo = MODBUS_ERRORS["exception"]
            return Message(what, {"device": name, "code": worst_code}), Message(todo)
        else:
            what, todo = MODBUS_ERRORS["timeout"]
        return Message(what, {"device": name}), Message(todo)
    return (
        Message(N_("{device} delivers no frames."), {"device": name}),
        Message(N_("Check the serial port in the config, the cable and the sensor's power.")),
    )


def check_device(state: SiteState, dev: Any) -> CheckResult:
    """A device answers, reads within its plausible range, and keeps delivering."""
    name, driver = dev.name, dev.driver
    title = Message(N_("Device {device}"), {"device": name})
    readings = state.tap.device_points(name)
    age = state.tap.age_s(name)
    online = state.metrics.get("modbus_device_online", {"device": name}) if driver == "modbus" else None
    polls_ok = state.metrics.get("modbus_polls_total", {"device": name, "result": "ok"})
    polls_failed = state.metrics.get("modbus_polls_total", {"device": name, "result": "failed"})
    points = [
        {
            "point": r.point,
            "value": r.value,
            "unit": r.unit,
            "good": r.quality is Quality.GOOD,
            "reason": (r.meta or {}).get("reason", ""),
            "series": list(state.tap.series.get((name, r.point), ())),
        }
        for r in readings
    ]
    poll = getattr(dev, "poll", None)
    fast_s, slow_s = getattr(poll, "fast_s", 1.0), getattr(poll, "slow_s", 60.0)
    stale = age is None or age > max(STALE_S, 3 * fast_s)
    failing = driver == "modbus" and online == 0.0 and polls_failed > 0
    if not readings or failing or (stale and driver != "modbus"):
        what, todo = device_failure(state, name, driver)
        return CheckResult(f"device:{name}", FAIL, title, what, todo, points)
    line = getattr(dev, "line", None)
    port_lost = (
        line is not None and state.metrics.get("modbus_transport_errors_total", {"bus": line.key()}) > 0
    )
    if age is not None and stale and (port_lost or age > 3 * slow_s):
        # No poll failed, yet nothing came: the port or the connection itself is gone.
        return CheckResult(
            f"device:{name}",
            FAIL,
            title,
            Message(
                N_("{device} has sent nothing for {s:.0f} s: its port or connection is lost."),
                {"device": name, "s": age},
            ),
            Message(N_("Check the RS-485 adapter or the gateway's network cable and power.")),
            points,
        )
    bad = [r for r in readings if r.quality is not Quality.GOOD]
    if bad:
        r = bad[0]
        return CheckResult(
            f"device:{name}",
            WARN,
            title,
            Message(
                N_("{point} reads {value} {unit}: {reason}."),
                {
                    "point": r.point,
                    "value": r.value,
                    "unit": r.unit,
                    "reason": (r.meta or {}).get("reason", "implausible"),
                },
            ),
            Message(
                N_(
                    "Check the sensor's placement and wiring, and the point's scale and range in the "
                    "profile or the site's overrides."
                )
            ),
            points,
        )
    total = polls_ok + polls_failed
    rate = f"{polls_ok / total:.0%}" if total else "-"
    return CheckResult(
        f"device:{name}",
        OK,
        title,
        Message(
            N_("{n} points read, all within their plausible range (polls answered: {rate})."),
            {"n": len(readings), "rate": rate},
        ),
        None,
        points,
    )


def check_gpio_loopbacks(state: SiteState) -> CheckResult:
    """Relays wired back to an input (``feedback_pin``): the contact follows the command."""
    title = Message(N_("GPIO loop-backs"))
    wired = [
        (dev.name, out.name)
        for dev in state.cfg.devices
        if dev.enabled and dev.driver == "gpio"
        for out in getattr(dev, "outputs", [])
        if out.feedback_pin is not None
    ]
    if not wired:
        return CheckResult("gpio", SKIP, title, Message(N_("No relay has a feedback contact wired.")))
    faults, unread = [], []
    for device, output in wired:
        r = state.tap.last.get((device, output))
        if r is None:
            unread.append(f"{device}.{output}")
        elif r.quality is not Quality.GOOD:
            faults.append((f"{device}.{output}", (r.meta or {}).get("fault", "")))
    if faults:
        where, why = faults[0]
        return CheckResult(
            "gpio",
            FAIL,
            title,
            Message(N_("{output}: {why}."), {"output": where, "why": why}),
            Message(N_("Check the relay and the wiring of its auxiliary contact to the input pin.")),
        )
    if unread:
        return CheckResult(
            "gpio",
            WARN,
            title,
            Message(N_("Not read yet: {outputs}."), {"outputs": ", ".join(unread)}),
            Message(N_("Run the check again once the agent has reported its outputs.")),
        )
    return CheckResult(
        "gpio", OK, title, Message(N_("{n} relay contact(s) follow their commands."), {"n": len(wired)})
    )


# -- site -------------------------------------------------------------------------------------------
def check_clock(state: SiteState) -> CheckResult:
    """NTP/GPS synchronised, or at least a battery-backed RTC."""
    q = state.clock.quality()
    title = Message(N_("Clock"))
    if q is ClockQuality.SYNCED:
        return CheckResult("clock", OK, title, Message(N_("The clock is synchronised (NTP or GPS).")))
    if q is ClockQuality.RTC:
        return CheckResult(
            "clock",
            WARN,
            title,
            Message(N_("The clock runs on its battery RTC, not synchronised.")),
            Message(
                N_("Allow NTP (UDP 123) to a time server or connect the GPS; readings are marked until then.")
            ),
        )
    return CheckResult(
        "clock",
        FAIL,
        title,
        Message(N_("The clock is not synchronised and there is no RTC.")),
        Message(
            N_(
                "Connect the network or the GPS so the clock can be set; until then every "
                "reading is marked with an untrusted time."
            )
        ),
    )


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(state: SiteState) -> CheckResult:
    """Free space where the store lives."""
    where = _existing(state.cfg.store.path.parent)
    free = shutil.disk_usage(where).free
    title = Message(N_("Free disk"))
    detail = Message(N_("{free} MiB free on the store's disk."), {"free": free // (1024 * 1024)})
    if free < MIN_FREE_BYTES:
        return CheckResult(
            "disk",
            WARN,
            title,
            detail,
            Message(N_("Free some space or use a larger card: the buffer needs room for outages.")),
        )
    return CheckResult("disk", OK, title, detail)


def check_store(state: SiteState) -> CheckResult:
    """The buffer opens and passes its integrity check."""
    title = Message(N_("Reading buffer"))
    if state.store_stats is not None:
        stats = state.store_stats()
        return CheckResult(
            "store",
            OK,
            title,
            Message(
                N_(
                    "The buffer is healthy: {depth} readings wait for the centre, {fill:.0%} of its size used."
                ),
                {"depth": stats.depth, "fill": stats.fill},
            ),
        )
    path = state.cfg.store.path
    if not path.exists():
        return CheckResult("store", OK, title, Message(N_("The buffer will be created at first start.")))
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            depth = waiting_readings(db)
    except sqlite3.Error as exc:
        verdict, depth = str(exc), 0
    if verdict != "ok":
        return CheckResult(
            "store",
            FAIL,
            title,
            Message(N_("The buffer file fails its check: {why}."), {"why": verdict}),
            Message(
                N_(
                    "Start the agent: it moves a corrupt buffer aside and starts a new one. "
                    "If it happens again, replace the SD card."
                )
            ),
        )
    return CheckResult(
        "store",
        OK,
        title,
        Message(N_("The buffer is healthy: {depth} readings wait for the centre."), {"depth": depth}),
    )


def _broker_reachable(url: str, timeout: float = 3.0) -> str | None:
    parts = urlsplit(url)
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def check_broker(state: SiteState) -> CheckResult:
    """The centre's broker answers, or the agent buffers until it does."""
    title = Message(N_("Link to the centre"))
    sync = state.cfg.sync
    if sync is None:
        return CheckResult("broker", SKIP, title, Message(N_("No sync section: readings stay on this site.")))
    health = state.sync_health() if state.sync_health is not None else None
    if health is not None and health.get("connected"):
        return CheckResult(
            "broker", OK, title, Message(N_("Connected to {broker}."), {"broker": sync.broker})
        )
    error = health.get("last_error") if health else _broker_reachable(sync.broker)
    if health is None and error is None:
        return CheckResult(
            "broker", OK, title, Message(N_("{broker} is reachable."), {"broker": sync.broker})
        )
    return CheckResult(
        "broker",
        WARN,
        title,
        Message(
            N_("{broker} is not reachable ({why}); readings are buffered on site."),
            {"broker": sync.broker, "why": error or "-"},
        ),
        Message(N_("Check the network link, the firewall (port 8883) and the broker address.")),
    )


def check_certificate(state: SiteState) -> CheckResult:
    """The site's TLS certificate is valid for a while yet."""
    title = Message(N_("Site certificate"))
    sync = state.cfg.sync
    cert = sync.tls.cert_file if sync is not None and sync.tls is not None else None
    if cert is None:
        return CheckResult("certificate", SKIP, title, Message(N_("No client certificate configured.")))
    if not Path(cert).exists() and sync is not None and sync.enrol is not None:
        token = sync.enrol.token_file.is_file()
        return CheckResult(
            "certificate",
            WARN if token else FAIL,
            title,
            Message(N_("The site is not enrolled yet; readings are buffered on site.")),
            Message(N_("The agent enrols by itself at its first connection to the centre."))
            if token
            else Message(N_("No enrolment token: ask the centre for one and write it to {file}."),
                         {"file": str(sync.enrol.token_file)}),
        )
    from cryptography import x509

    try:
        c = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    except (OSError, ValueError):
        return CheckResult(
            "certificate",
            FAIL,
            title,
            Message(N_("{file} is not a readable certificate."), {"file": Path(cert).name}),
            Message(N_("Enrol the site again to get a certificate from the centre.")),
        )
    left = (c.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days
    if left < 0:
        return CheckResult(
            "certificate",
            FAIL,
            title,
            Message(N_("The certificate expired {days} days ago."), {"days": -left}),
            Message(N_("Enrol the site again to get a new certificate.")),
        )
    status = WARN if left < CERT_WARN_DAYS else OK
    return CheckResult(
        "certificate",
        status,
        title,
        Message(N_("The certificate is valid for {days} more days."), {"days": left}),
        Message(N_("Renew it soon (enrol again).")) if status == WARN else None,
    )


def check_lighting(state: SiteState) -> CheckResult:
    """Tonight's lighting plan from the astronomical clock."""
    title = Message(N_("Lighting tonight"))
    cfg = state.cfg
    if cfg.lighting is None:
        return CheckResult("lighting", SKIP, title, Message(N_("No street lighting at this site.")))
    from control.lighting.astro import AstroClock, night_of

    loc = cfg.site.location
    astro = AstroClock(loc.lat, loc.lon, cfg.site.timezone, cfg.lighting.astro, loc.elevation_m)
    local = dt.datetime.fromtimestamp(state.clock.now(), astro.tz)
    times = astro.night(night_of(local))
    return CheckResult(
        "lighting",
        OK,
        title,
        Message(
            N_("Lights on at {on}, off at {off} ({circuits} circuits)."),
            {
                "on": times.on.strftime("%H:%M"),
                "off": times.off.strftime("%H:%M"),
                "circuits": len(cfg.lighting.circuits),
            },
        ),
    )


def check_traffic(state: SiteState) -> CheckResult:
    """The signal controller's link (seen by the running agent)."""
    title = Message(N_("Signal controller"))
    if state.cfg.traffic is None:
        return CheckResult("traffic", SKIP, title, Message(N_("No traffic signals at this site.")))
    tasks = state.task_states() if state.task_states is not None else {}
    mine = {k: v for k, v in tasks.items() if "traffic" in k}
    if not mine:
        return CheckResult("traffic", SKIP, title, Message(N_("Checked on the running agent's page.")))
    down = [k for k, v in mine.items() if v.get("state") != "running"]
    if down:
        return CheckResult(
            "traffic",
            FAIL,
            title,
            Message(
                N_("The controller link is down: {why}."), {"why": mine[down[0]].get("last_error") or down[0]}
            ),
            Message(
                N_(
                    "Check the cable to the controller and its power; the signals fall back to "
                    "flashing amber on their own."
                )
            ),
        )
    return CheckResult("traffic", OK, title, Message(N_("The controller link is up.")))


def run_checks(state: SiteState) -> list[CheckResult]:
    """Every check, devices first."""
    results = [
        check_device(state, d) for d in state.cfg.devices if d.enabled and d.driver not in CONTROL_KINDS
    ]
    for fn in (
        check_clock,
        check_disk,
        check_store,
        check_broker,
        check_certificate,
        check_lighting,
        check_traffic,
    ):
        results.append(fn(state))
    return results


async def sample_site(cfg: SiteConfig, seconds: float, kinds: KindRegistry | None = None) -> SiteState:
    """Run the site's acquisition sources (not its control loops) for ``seconds`` and record them."""
    registry = kinds if kinds is not None else KindRegistry()
    tap, metrics, clock = LiveTap(), Metrics(), Clock()
    ctx = RunContext(cfg, tap, clock, metrics, logging.getLogger("kbe.check"))
    by_kind: dict[str, list[Any]] = {}
    for d in cfg.devices:
        if d.enabled and d.driver not in CONTROL_KINDS:
            by_kind.setdefault(d.driver, []).append(d)
    tasks = []
    for kind, configs in by_kind.items():
        for source in registry.get(kind).build_sources(configs, ctx):
            tasks.append(asyncio.create_task(source.run(ctx), name=f"check:{source.name}"))
    started = time.monotonic()
    try:
        await asyncio.sleep(seconds)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
    return SiteState(cfg, tap, metrics, clock, sampled_s=time.monotonic() - started)
