"""The page's HTTP API without a browser: the password gate, lighting state and the lighting plan
in the checks, non-finite values, the report downloads."""

from __future__ import annotations

import math

from aiohttp.test_utils import TestClient, TestServer

from agent.commissioning.checks import SiteState
from agent.commissioning.live import LiveTap
from agent.config import parse_config
from agent.localpage.server import LocalPage
from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.readings import Reading
from tests.lighting.conftest import lighting_dict


async def test_api_gate_state_checks_and_report(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("bí-mật\n")
    secret.chmod(0o600)
    cfg = parse_config(
        {
            "site": {"id": "api-01", "name": "API", "location": {"lat": 21.15, "lon": 106.16}},
            "devices": [
                {"driver": "lighting", "name": "street"},
                {
                    "driver": "gpio",
                    "name": "cabinet",
                    "pin_factory": "mock",
                    "outputs": [
                        {"name": "c1", "pin": 17},
                        {"name": "c1-dim", "pin": 18, "kind": "pwm"},
                        {"name": "c2", "pin": 22},
                        {"name": "c2-dim", "pin": 23, "kind": "pwm"},
                    ],
                },
            ],
            "lighting": lighting_dict(state_path=str(tmp_path / "lighting.json")),
            "store": {"path": str(tmp_path / "store.db")},
            "local_page": {"listen": "127.0.0.1:0", "password_file": str(secret)},
        }
    )
    tap = LiveTap()
    tap.record([Reading("street", "c1.level", 70, 1.0, "%"), Reading("cabinet", "c1", math.nan, 1.0)])
    assert cfg.local_page is not None
    page = LocalPage(cfg.local_page, SiteState(cfg, tap, Metrics(), Clock()))
    async with TestClient(TestServer(page.app())) as client:
        assert (await client.get("/api/state")).status == 401
        resp = await client.get("/", allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == "/login"
        assert (await client.post("/login", data={"password": "sai"}, allow_redirects=False)).status == 401
        resp = await client.post("/login", data={"password": "bí-mật"}, allow_redirects=False)
        assert resp.status == 302
        state = await (await client.get("/api/state?lang=en")).json()
        street = next(c for c in state["control"] if c["name"] == "street")
        assert street["points"][0] == {
            "point": "c1.level",
            "value": 70,
            "unit": "%",
            "good": True,
            "reason": "",
        }
        cabinet = next(d for d in state["devices"] if d["name"] == "cabinet")
        assert cabinet["points"][0]["value"] == "nan"  # valid JSON
        checks = {c["id"]: c for c in (await (await client.post("/api/checks?lang=vi")).json())["checks"]}
        assert checks["lighting"]["detail"].startswith("Bật đèn lúc ")
        assert checks["lighting"]["status"] == "ok"
        resp = await client.get("/report.json")
        assert resp.headers["Content-Disposition"] == 'attachment; filename="commissioning-api-01.json"'
        assert (await resp.json())["site"]["id"] == "api-01"
        resp = await client.get("/report.html?lang=en")
        assert "attachment" in resp.headers["Content-Disposition"]
        assert "Lights on at" in await resp.text()
        assert (await client.get("/static/app.js")).status == 200
