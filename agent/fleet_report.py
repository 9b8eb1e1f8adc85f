"""The agent's own health, published as a balena device tag for the operator's fleet tools.

On balena, a service labelled ``io.balena.features.balena-api: '1'`` gets ``BALENA_API_URL``,
``BALENA_API_KEY`` (the device's own key) and ``BALENA_DEVICE_UUID``. A device key may create and
update ``device_tag`` rows of its own device (open-balena-api, ``DEVICE_API_KEY_PERMISSIONS``), so
the agent upserts the tag ``kbe.health`` with a compact JSON summary of its ``/health`` report:
the verdict of the agent itself (supervised tasks, writer, uplink), not the container state that
balena already shows. ``edge-agent fleet`` reads these tags to gate rollout waves.

Stdlib HTTP only: the device image carries no balena-sdk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kernel.errors import ConfigError

log = logging.getLogger("kbe.fleet_report")

HEALTH_TAG = "kbe.health"
FORMAT_VERSION = 1
REPOST_EVERY = 20


@dataclass(frozen=True)
class HealthTag:
    """One decoded ``kbe.health`` value: the agent's verdict and when and by which process it was made."""

    ok: bool
    at: float  # wall-clock time of the report (epoch seconds)
    started: float  # wall-clock start of the agent process that made it
    restarts: int = 0  # supervised task restarts since that start
    uplink: bool | None = None  # MQTT uplink connected (None: sync off)
    depth: int = 0  # readings not yet acknowledged by the centre
    why: tuple[str, ...] = field(default_factory=tuple)


def summarize(report: Mapping[str, Any], started: float, now: float) -> HealthTag:
    """Reduce the agent's ``/health`` report to the fields a rollout gate needs."""
    why: list[str] = []
    for name, task in (report.get("tasks") or {}).items():
        if task.get("state") == "cooling-down":
            why.append(f"{name} cooling down: {task.get('last_error') or '?'}"[:120])
    writer = report.get("writer") or {}
    if writer.get("stalled"):
        why.append("writer stalled")
    sync = report.get("sync")
    uplink = None if sync is None else bool(sync.get("connected"))
    if uplink is False:
        why.append("uplink down")
    restarts = sum(int(t.get("restarts", 0)) for t in (report.get("tasks") or {}).values())
    return HealthTag(
        ok=bool(report.get("ok")),
        at=round(now, 1),
        started=round(started, 1),
        restarts=restarts,
        uplink=uplink,
        depth=int((report.get("buffer") or {}).get("depth", 0)),
        why=tuple(why[:5]),
    )


def encode(tag: HealthTag) -> str:
    """The tag value: compact JSON, short enough for the dashboard."""
    return json.dumps(
        {
            "v": FORMAT_VERSION,
            "ok": tag.ok,
            "t": tag.at,
            "start": tag.started,
            "restarts": tag.restarts,
            "uplink": tag.uplink,
            "depth": tag.depth,
            "why": list(tag.why),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode(value: str) -> HealthTag | None:
    """Parse a tag value; None when it is not a health report this version understands."""
    try:
        raw = json.loads(value)
        if not isinstance(raw, dict) or raw.get("v") != FORMAT_VERSION:
            return None
        return HealthTag(
            ok=raw["ok"] is True,
            at=float(raw["t"]),
            started=float(raw["start"]),
            restarts=int(raw.get("restarts", 0)),
            uplink=raw.get("uplink") if isinstance(raw.get("uplink"), bool) else None,
            depth=int(raw.get("depth", 0)),
            why=tuple(str(w) for w in raw.get("why", [])),
        )
    except (ValueError, KeyError, TypeError):
        return None


class BalenaHealthReporter:
    """Upserts ``kbe.health`` on this device every ``interval_s`` through the balena API (device key)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        device_uuid: str,
        health: Callable[[], dict[str, Any]],
        interval_s: float = 30.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.api = api_url.rstrip("/") + "/v7/"
        self.api_key = api_key
        self.device_uuid = device_uuid
        self.health = health
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.started = time.time()
        self._device_id: int | None = None
        self.sent = 0
        self.last_error = ""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], health: Callable[[], dict[str, Any]]
    ) -> BalenaHealthReporter | None:
        """A reporter when running under balena with the balena-api feature; None otherwise."""
        url, key, uuid = env.get("BALENA_API_URL"), env.get("BALENA_API_KEY"), env.get("BALENA_DEVICE_UUID")
        if not (url and key and uuid):
            return None
        raw = env.get("KBE_HEALTH_TAG_INTERVAL_S", "30")
        try:
            interval = float(raw)
        except ValueError:
            interval = -1.0
        if not 1.0 <= interval <= 86400.0:
            raise ConfigError(
                "environment",
                [f"KBE_HEALTH_TAG_INTERVAL_S: {raw!r} is not a number of seconds from 1 to 86400"],
            )
        return cls(url, key, uuid, health, interval_s=interval)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.request  # only on a balena device: http.client and email stay out of other sites

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - the URL is the balena API address balena injects
            self.api + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
            raw = resp.read()
        return json.loads(raw) if raw and raw.strip().startswith((b"{", b"[")) else raw.decode()

    def _device(self) -> int:
        if self._device_id is None:
            query = urllib.parse.urlencode(
                {"$select": "id", "$filter": f"uuid eq '{self.device_uuid}'"}, quote_via=urllib.parse.quote
            )
            rows = self._call("GET", f"device?{query}")["d"]
            if not rows:
                raise LookupError(f"device {self.device_uuid} not found in the balena API")
            self._device_id = int(rows[0]["id"])
        return self._device_id

    def publish_once(self) -> None:
        """Upsert the tag once (blocking): POST, and PATCH when it exists (HTTP 409), like pinejs upsert."""
        import urllib.error

        device = self._device()
        value = encode(summarize(self.health(), self.started, time.time()))
        query = urllib.parse.urlencode(
            {"$filter": f"(device eq {device}) and (tag_key eq '{HEALTH_TAG}')"}, quote_via=urllib.parse.quote
        )
        # Once the tag exists, one PATCH a report; every REPOST_EVERY reports the upsert starts with
        # a POST again, in case someone deleted the tag (a PATCH matching nothing still answers 200).
        if self.sent % REPOST_EVERY == 0:
            try:
                self._call("POST", "device_tag", {"device": device, "tag_key": HEALTH_TAG, "value": value})
                self.sent += 1
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 409:
                    raise
        self._call("PATCH", f"device_tag?{query}", {"value": value})
        self.sent += 1

    async def run(self) -> None:
        """Report forever; a failed report is logged and retried next interval (never raises)."""
        while True:
            try:
                await asyncio.to_thread(self.publish_once)
                self.last_error = ""
            except Exception as exc:  # network, API or permission: the agent keeps running regardless
                msg = f"{type(exc).__name__}: {exc}"
                if msg != self.last_error:
                    log.warning("could not publish %s to the balena API: %s", HEALTH_TAG, msg)
                self.last_error = msg
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.sleep(self.interval_s)
