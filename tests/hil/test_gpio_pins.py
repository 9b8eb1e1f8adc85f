"""Inputs driven by a rig into an agent's gpiozero pins: the socket factory, the rig file, and a
rig run where a photocell and a door contact flip in a subprocess agent."""

from __future__ import annotations

import asyncio
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from gpiozero import DigitalInputDevice

from drivers.gpio.factory import make_pin_factory
from drivers.gpio.rigpins import SOCKET_ENV, RigPinFactory, format_line, parse_line
from hil.expect import Row, RunRecord, evaluate
from hil.pins import PinServer
from hil.rig import parse_rig
from hil.runner import sunset_site
from hil.schedule import plan
from kernel.errors import ConfigError, DeviceError
from tests.conftest import REPO, agent_argv, agent_env

RIGS = REPO / "hil" / "rigs"


async def _until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_wire_lines_round_trip_and_bad_lines_are_refused() -> None:
    assert parse_line(format_line(22, True)) == (22, True)
    assert parse_line(b"5 0") == (5, False)
    for bad in (b"22", b"22 2", b"99 1", b"x 1", b"1 1 1"):
        with pytest.raises(ValueError):
            parse_line(bad)


async def test_rig_sets_levels_in_the_factorys_pins_and_replays_them_on_reconnect(tmp_path: Path) -> None:
    server = PinServer(tmp_path / "p.sock")
    await server.start()
    await server.set(27, False)  # set before the agent connects: replayed on connect
    factory = RigPinFactory(str(server.path), retry_s=0.05)
    try:
        door = DigitalInputDevice(22, pull_up=True, pin_factory=factory)
        cell = DigitalInputDevice(27, pull_up=True, pin_factory=factory)
        edges: list[bool] = []
        door.when_activated = lambda _d: edges.append(True)
        door.when_deactivated = lambda _d: edges.append(False)
        await _until(lambda: cell.is_active)  # low level on a pull-up: active
        assert not door.is_active
        await server.set(22, False)
        await _until(lambda: door.is_active)
        await server.set(22, True)
        await _until(lambda: not door.is_active)
        assert edges == [True, False]
        # The rig restarts: the factory reconnects and gets every level again.
        await server.close()
        server2 = PinServer(tmp_path / "p.sock")
        server2.levels = {22: False, 27: True}
        await server2.start()
        await _until(lambda: door.is_active and not cell.is_active)
        await server2.close()
    finally:
        factory.close()
        await server.close()


def test_rig_factory_needs_its_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    with pytest.raises(DeviceError, match=SOCKET_ENV):
        make_pin_factory("rig")


def test_gpio_input_faults_are_validated() -> None:
    rig = {
        "rig": "x",
        "duration_s": 60,
        "devices": [
            {"kind": "gpio", "name": "io", "inputs": [{"name": "door", "pin": 22, "kind": "door"}]},
        ],
        "faults": [{"kind": "gpio_input", "device": "io", "input": "door", "at_s": 5}],
    }
    with pytest.raises(ConfigError) as err:
        parse_rig(rig)
    assert "faults[0].device: 'io' has pins: mock" in "\n".join(err.value.problems)
    rig["devices"][0]["pins"] = "rig"
    rig["faults"][0]["input"] = "window"
    with pytest.raises(ConfigError) as err:
        parse_rig(rig)
    assert "faults[0].input: 'io' has no input 'window' (inputs: door)" in "\n".join(err.value.problems)


def test_a_reading_that_does_not_follow_fails_by_name() -> None:
    rig = parse_rig(
        {
            "rig": "x",
            "duration_s": 60,
            "devices": [
                {"kind": "gpio", "name": "io", "pins": "rig", "inputs": [{"name": "door", "pin": 22}]}
            ],
            "faults": [{"kind": "gpio_input", "device": "io", "input": "door", "at_s": 10, "for_s": 10}],
        }
    )
    _, windows = plan(rig)
    t0 = 1000.0
    windows[0].start_wall, windows[0].end_wall = t0 + 10, t0 + 20
    rows = [Row(1, "io", "door", True, t0 + 10.1), Row(2, "io", "door", True, t0 + 21.0)]
    rec = RunRecord(rig, t0, t0 + 60, 2, rows, windows)
    checks = {c.label: c for c in evaluate(rec).checks if c.name == "follows"}
    assert checks["follows[door=active@10s]"].ok
    closed = checks["follows[door=inactive@20s]"]
    assert not closed.ok
    assert "io.door=False not within 5 s; next was True 1.0 s after" in closed.detail


def test_the_site_is_placed_where_the_sun_sets_soon() -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from astral import Observer
    from astral import sun as astral_sun

    for hour in (0, 6, 12, 18):
        now = dt.datetime(2026, 12, 6, hour, tzinfo=dt.timezone.utc).timestamp()
        lat, lon, tz = sunset_site(300, now)
        local = dt.datetime.fromtimestamp(now, ZoneInfo(tz))
        assert local.hour >= 12  # the evening of the night the lighting controller is in
        sunset = astral_sun.sunset(Observer(lat, lon), local.date(), tzinfo=ZoneInfo(tz))
        assert abs(sunset.timestamp() - (now + 300)) < 60


@pytest.mark.timeout(120)
def test_rig_flips_photocell_and_door_in_a_subprocess_agent(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = subprocess.run(
        agent_argv(
            "hil", "run", str(RIGS / "cabinet-inputs.yaml"), "--duration", "20", "--junit", str(junit)
        ),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = {tc.get("name"): tc for tc in suite.iter("testcase")}
    photocell = cases["follows[photocell=active@3.3s]"]
    assert photocell.find("failure") is None
    out = photocell.findtext("system-out") or ""
    # The lighting controller in the agent switched the circuit on, through the cabinet's contactor.
    assert "street-lights.c1.on=True" in out
    assert "cabinet-io.contactor-1=1" in out
    assert cases["follows[door=active@6.7s]"].find("failure") is None
    assert cases["follows[door=inactive@11.7s]"].find("failure") is None
