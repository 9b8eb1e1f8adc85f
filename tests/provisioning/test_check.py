"""`edge-agent provision check` against an emulated site: a live device passes, a silent one fails
with its reason and what to do, the report is written as HTML (inline SVG charts) and JSON in both
languages; the local_page section refuses public addresses and password-less network pages."""

from __future__ import annotations

import json

import pytest
import yaml

from agent.commissioning.report import sparkline
from agent.config import parse_config
from drivers.modbus.emulator import EmulatedDevice, Emulator, Fault
from drivers.modbus.profile import load_profile
from kernel.errors import ConfigError
from tests.provisioning.rig import run_cli


async def test_check_reports_what_is_wrong_and_what_to_do(tmp_path):
    emu = Emulator()
    meter = EmulatedDevice(load_profile("eastron-sdm120"), 1)
    dead = EmulatedDevice(load_profile("xy-md02"), 2)
    dead.set_fault(Fault.NO_ANSWER)
    port = await emu.add_tcp([meter, dead])
    line = {"type": "tcp", "host": "127.0.0.1", "port": port}
    cfg = {
        "site": {"id": "chk-01", "name": "Trạm kiểm tra", "location": {"lat": 21.15, "lon": 106.16}},
        "devices": [
            {
                "driver": "modbus",
                "name": "meter",
                "profile": "eastron-sdm120",
                "unit": 1,
                "line": line,
                "poll": {"fast_s": 0.5},
                "timeout_s": 0.3,
            },
            {
                "driver": "modbus",
                "name": "climate",
                "profile": "xy-md02",
                "unit": 2,
                "line": line,
                "poll": {"fast_s": 0.5},
                "timeout_s": 0.3,
            },
        ],
        "store": {"path": str(tmp_path / "store.db")},
    }
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    try:
        code, out, err = await run_cli(
            "provision",
            "check",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "reports"),
            "--sample-s",
            "3",
            "--lang",
            "en",
        )
    finally:
        await emu.close()
    assert code == 1, err  # a check failed
    assert "[OK  ] Device meter: 15 points read" in out
    assert "[FAIL] Device climate: climate does not answer." in out
    assert "What to do: Check its power, the A/B wiring" in out
    report = json.loads((tmp_path / "reports" / "commissioning-chk-01.json").read_text())
    assert report["passed"] is False
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["device:climate"]["detail"] == {
        "vi": "climate không trả lời.",
        "en": "climate does not answer.",
    }
    assert checks["device:meter"]["status"] == "ok"
    assert {"clock", "disk", "store", "broker", "certificate", "lighting", "traffic"} <= set(checks)
    html_vi = (tmp_path / "reports" / "commissioning-chk-01.vi.html").read_text()
    assert "Biên bản nghiệm thu" in html_vi
    assert "<svg" in html_vi
    assert "<script" not in html_vi  # self-contained, nothing to fetch or run
    assert "Commissioning report" in (tmp_path / "reports" / "commissioning-chk-01.en.html").read_text()


def test_sparkline_scales_into_its_box():
    svg = sparkline([(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)], width=100, height=20)
    pts = [tuple(map(float, p.split(","))) for p in svg.split('points="')[1].split('"')[0].split()]
    assert pts[0][0] == 1.0
    assert pts[-1][0] == 99.0
    assert min(y for _, y in pts) == 1.0  # the highest value at the top
    assert sparkline([(0.0, 1.0)]) == ""


def _site(page: dict) -> dict:
    return {"site": {"id": "p-01", "name": "P", "location": {"lat": 21.0, "lon": 106.0}}, "local_page": page}


def test_local_page_is_off_public_interfaces_and_needs_a_password_on_the_network(tmp_path):
    with pytest.raises(ConfigError) as exc:
        parse_config(_site({"listen": "8.8.8.8:8080"}))
    assert "not a loopback or private address" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse_config(_site({"listen": "192.168.1.10:8080"}))
    assert "needs a password file" in str(exc.value)
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as exc:
        parse_config(_site({"listen": "192.168.1.10:8080", "password_file": str(secret)}))
    assert "0600" in str(exc.value)
    secret.chmod(0o600)
    cfg = parse_config(_site({"listen": "192.168.1.10:8080", "password_file": str(secret)}))
    assert cfg.local_page is not None
    assert cfg.local_page.password() == "x"
    assert parse_config(_site({"listen": "0.0.0.0:8080", "allow_public": True, "password_file": str(secret)}))


def test_gpio_loop_back_follows_the_relay_or_fails_with_what_to_do():
    from agent.commissioning.checks import SiteState, check_gpio_loopbacks
    from agent.commissioning.live import LiveTap
    from kernel.clock import Clock
    from kernel.metrics import Metrics
    from kernel.readings import Quality, Reading

    data = _site({})
    del data["local_page"]
    data["devices"] = [
        {
            "driver": "gpio",
            "name": "cabinet",
            "pin_factory": "mock",
            "outputs": [{"name": "relay1", "pin": 17, "feedback_pin": 27}],
        },
    ]
    cfg = parse_config(data)
    tap = LiveTap()
    state = SiteState(cfg, tap, Metrics(), Clock())
    assert check_gpio_loopbacks(state).status == "warn"  # nothing reported yet
    tap.record([Reading("cabinet", "relay1", 1.0, 0.0)])
    assert check_gpio_loopbacks(state).status == "ok"
    fault = {"fault": "feedback contact open while relay on"}
    tap.record([Reading("cabinet", "relay1", 1.0, 1.0, quality=Quality.BAD, meta=fault)])
    verdict = check_gpio_loopbacks(state)
    assert verdict.status == "fail"
    assert verdict.detail.render("en") == "cabinet.relay1: feedback contact open while relay on."
    assert verdict.advice.render("vi").startswith("Kiểm tra rơ-le")


def test_a_device_whose_port_is_lost_fails_although_no_poll_failed():
    import time

    from agent.commissioning.checks import SiteState, check_device
    from agent.commissioning.live import LiveTap
    from kernel.clock import Clock
    from kernel.metrics import Metrics
    from kernel.readings import Reading

    data = _site({})
    del data["local_page"]
    line = {"type": "tcp", "host": "127.0.0.1", "port": 1502}
    data["devices"] = [{"driver": "modbus", "name": "meter", "profile": "xy-md02", "unit": 1, "line": line}]
    cfg = parse_config(data)
    tap, metrics = LiveTap(), Metrics()
    tap.record([Reading("meter", "humidity", 55.0, 0.0, "%RH")])
    state = SiteState(cfg, tap, metrics, Clock())
    assert check_device(state, cfg.devices[0]).status == "ok"
    tap.last_seen["meter"] = time.monotonic() - 40
    assert check_device(state, cfg.devices[0]).status == "ok"  # quiet, but nothing says the port is gone
    metrics.inc("modbus_transport_errors_total", labels={"bus": "tcp:127.0.0.1:1502"})
    verdict = check_device(state, cfg.devices[0])
    assert verdict.status == "fail"
    assert "its port or connection is lost" in verdict.detail.render("en")
