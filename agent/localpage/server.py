"""The local page's HTTP server (aiohttp on the agent's own event loop) and its JSON API.

Routes: ``/`` the page, ``/login``, ``/api/state`` (everything the page shows, in the chosen
language), ``/api/series`` (one point's recent samples), ``POST /api/checks`` (run the
commissioning checks), ``/report.html`` and ``/report.json`` (download the last report), and
``/static/`` (the page's script and style, served from the package: no CDN).
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from agent.commissioning.checks import CONTROL_KINDS, CheckResult, SiteState, check_device, run_checks
from agent.commissioning.report import STATUS_WORDS, render_html, results_json
from agent.localpage.config import LocalPageConfig
from kernel.errors import AgentError
from kernel.i18n import LANGUAGES, N_, gettext_for, pick_language
from kernel.readings import Quality

log = logging.getLogger("kbe.localpage")
HERE = Path(__file__).resolve().parent
COOKIE = "kbe_session"
LANG_COOKIE = "kbe_lang"
MAX_SESSIONS = 64
SESSION_S = 12 * 3600
CLOCK_WORDS = {
    "synced": N_("synchronised (NTP or GPS)"),
    "rtc": N_("battery RTC, not synchronised"),
    "unsynced": N_("not synchronised"),
}


def _jsonable(value: Any) -> Any:
    """NaN and infinities are not JSON: shown as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class LocalPage:
    """Serves the page for one running agent."""

    def __init__(self, cfg: LocalPageConfig, state: SiteState) -> None:
        self.cfg = cfg
        self.state = state
        self.password = cfg.password()
        self.sessions: OrderedDict[str, float] = OrderedDict()
        self.last_results: list[CheckResult] | None = None
        self.last_run: float = 0.0
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=jinja2.select_autoescape(["html"]),
            extensions=["jinja2.ext.i18n"],
        )
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self.index)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_get("/api/state", self.api_state)
        app.router.add_get("/api/series", self.api_series)
        app.router.add_post("/api/checks", self.api_checks)
        app.router.add_get("/report.html", self.report_html)
        app.router.add_get("/report.json", self.report_json)
        app.router.add_static("/static/", HERE / "static")
        return app

    async def start(self) -> None:
        """Bind and serve."""
        host, _, port = self.cfg.listen.rpartition(":")
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]"), int(port))
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise AgentError(
                f"local_page.listen {self.cfg.listen}: cannot listen: "
                f"{os.strerror(exc.errno) if exc.errno else exc} (is another agent running with this config?)"
            ) from exc
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(port)
        log.info("local page on http://%s:%d/", host, self.port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    # -- auth and language ----------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.password is None or request.path in ("/login",) or request.path.startswith("/static/"):
            return await handler(request)
        token = request.cookies.get(COOKIE, "")
        expires = self.sessions.get(token)
        if expires is None or expires < time.monotonic():
            if request.path.startswith("/api/"):
                raise web.HTTPUnauthorized(text="log in first")
            raise web.HTTPFound("/login")
        return await handler(request)

    def lang(self, request: web.Request) -> str:
        """``?lang=``, else the cookie, else the configured default (Vietnamese)."""
        return pick_language(
            request.query.get("lang") or request.cookies.get(LANG_COOKIE) or self.cfg.language
        )

    def _render(self, name: str, lang: str, **kw: Any) -> web.Response:
        self.env.install_gettext_translations(gettext_for(lang), newstyle=True)  # type: ignore[attr-defined]
        body = self.env.get_template(name).render(lang=lang, languages=LANGUAGES, **kw)
        resp = web.Response(text=body, content_type="text/html")
        resp.set_cookie(LANG_COOKIE, lang, samesite="Strict", httponly=True)
        return resp

    async def login_form(self, request: web.Request) -> web.Response:
        """The password form."""
        return self._render("login.html", self.lang(request), failed=False)

    async def login(self, request: web.Request) -> web.Response:
        """Check the password; start a session."""
        form = await request.post()
        given = str(form.get("password", ""))
        if self.password is None or not hmac.compare_digest(given.encode(), self.password.encode()):
            log.warning("local page: wrong password from %s", request.remote)
            resp = self._render("login.html", self.lang(request), failed=True)
            resp.set_status(401)
            return resp
        token = secrets.token_urlsafe(24)
        self.sessions[token] = time.monotonic() + SESSION_S
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        resp = web.HTTPFound("/")
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", max_age=SESSION_S)
        raise resp

    # -- pages ------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        """The page (values arrive through /api/state)."""
        site = self.state.cfg.site
        return self._render("index.html", self.lang(request), site=site)

    # -- API --------------------------------------------------------------------------------------
    def snapshot(self, lang: str) -> dict[str, Any]:
        """Everything the page shows, in ``lang``."""
        st = self.state
        t = gettext_for(lang).gettext
        devices = [
            self._device_json(dev, t)
            for dev in st.cfg.devices
            if dev.enabled and dev.driver not in CONTROL_KINDS
        ]
        # Lighting and signal state: the lighting device's points, and each intersection's (the
        # traffic controller reports under the intersection's name).
        control = [
            self._state_json(dev.name, "lighting", t)
            for dev in st.cfg.devices
            if dev.enabled and dev.driver == "lighting"
        ]
        if st.cfg.traffic is not None:
            control += [self._state_json(ix.name, "traffic", t) for ix in st.cfg.traffic.intersections]
        stats = st.store_stats() if st.store_stats is not None else None
        sync = st.sync_health() if st.sync_health is not None else None
        tls = st.cfg.sync.tls if st.cfg.sync is not None else None
        enrolled = bool(tls is not None and tls.cert_file is not None and Path(tls.cert_file).is_file())
        oldest = stats.oldest_ts if stats is not None else None
        return {
            "site": {"id": st.cfg.site.id, "name": st.cfg.site.name},
            "clock": t(CLOCK_WORDS[st.clock.quality().name.lower()]),
            "devices": devices,
            "control": control,
            "buffer": {
                "depth": stats.depth if stats is not None else None,
                "oldest_age_s": None if oldest is None else round(max(0.0, st.clock.now() - oldest), 1),
            },
            "sync": {
                "configured": st.cfg.sync is not None,
                "connected": bool(sync and sync.get("connected")),
                "last_error": (sync or {}).get("last_error", ""),
                "enrolled": enrolled,
                "text": t(N_("connected"))
                if sync and sync.get("connected")
                else t(N_("not configured"))
                if st.cfg.sync is None
                else t(N_("buffering (not connected)")),
                "enrolment_text": t(N_("enrolled (mutual TLS)")) if enrolled else t(N_("not enrolled")),
            },
            "checks": None if self.last_results is None else self._checks_json(self.last_results, lang),
        }

    def _points_json(self, device: str) -> list[dict[str, Any]]:
        return [
            {
                "point": r.point,
                "value": _jsonable(r.value),
                "unit": r.unit,
                "good": r.quality is Quality.GOOD,
                "reason": (r.meta or {}).get("reason", "") or (r.meta or {}).get("fault", ""),
            }
            for r in self.state.tap.device_points(device)
        ]

    def _device_json(self, dev: Any, t: Any) -> dict[str, Any]:
        st = self.state
        verdict = check_device(st, dev)
        ok = st.metrics.get("modbus_polls_total", {"device": dev.name, "result": "ok"})
        failed = st.metrics.get("modbus_polls_total", {"device": dev.name, "result": "failed"})
        age = st.tap.age_s(dev.name)
        return {
            "name": dev.name,
            "driver": dev.driver,
            "status": verdict.status,
            "status_text": t(STATUS_WORDS[verdict.status]),
            "detail": verdict.detail.render(t),
            "advice": verdict.advice.render(t) if verdict.advice else "",
            "poll_success": None if not ok + failed else round(ok / (ok + failed), 3),
            "age_s": None if age is None else round(age, 1),
            "points": self._points_json(dev.name),
        }

    def _state_json(self, name: str, driver: str, t: Any) -> dict[str, Any]:
        age = self.state.tap.age_s(name)
        status = "ok" if age is not None else "skip"
        return {
            "name": name,
            "driver": driver,
            "status": status,
            "status_text": t(STATUS_WORDS[status]) if age is not None else t(N_("no state reported yet")),
            "detail": "",
            "advice": "",
            "poll_success": None,
            "age_s": None if age is None else round(age, 1),
            "points": self._points_json(name),
        }

    def _checks_json(self, results: list[CheckResult], lang: str) -> list[dict[str, Any]]:
        t = gettext_for(lang).gettext
        return [
            {
                "id": r.id,
                "status": r.status,
                "status_text": t(STATUS_WORDS[r.status]),
                "title": r.title.render(t),
                "detail": r.detail.render(t),
                "advice": r.advice.render(t) if r.advice else "",
            }
            for r in results
        ]

    async def api_state(self, request: web.Request) -> web.Response:
        """The page's data."""
        return web.json_response(self.snapshot(self.lang(request)))

    async def api_series(self, request: web.Request) -> web.Response:
        """Recent samples of one point: ``?device=&point=``."""
        key = (request.query.get("device", ""), request.query.get("point", ""))
        series = list(self.state.tap.series.get(key, ()))
        return web.json_response({"device": key[0], "point": key[1], "samples": series})

    async def api_checks(self, request: web.Request) -> web.Response:
        """Run the commissioning checks now (on the agent's live data)."""
        self.last_results = run_checks(self.state)
        self.last_run = self.state.clock.now()
        return web.json_response({"checks": self._checks_json(self.last_results, self.lang(request))})

    def _results(self) -> list[CheckResult]:
        if self.last_results is None:
            self.last_results = run_checks(self.state)
            self.last_run = self.state.clock.now()
        return self.last_results

    async def report_html(self, request: web.Request) -> web.Response:
        """The last report as a self-contained HTML download."""
        lang = self.lang(request)
        body = render_html(self._results(), self.state.cfg.site, self.last_run, lang)
        name = f"commissioning-{self.state.cfg.site.id}.{lang}.html"
        return web.Response(
            text=body,
            content_type="text/html",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def report_json(self, request: web.Request) -> web.Response:
        """The last report as JSON (both languages)."""
        data = results_json(self._results(), self.state.cfg.site, self.last_run)
        name = f"commissioning-{self.state.cfg.site.id}.json"
        return web.json_response(data, headers={"Content-Disposition": f'attachment; filename="{name}"'})
