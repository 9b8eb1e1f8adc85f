"""Pedestrian push buttons: a crosswalk with buttons walks only when called, and within its max wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from control.traffic.card import program_card
from control.traffic.config import DetectorConfig, IntersectionConfig
from control.traffic.runner import Intersection
from control.traffic.source import TrafficSource
from drivers.gpio.driver import Config as GpioDeviceConfig
from drivers.gpio.driver import GpioSource
from drivers.gpio.factory import mock_factory
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.modbus import ModbusSignalController
from kernel.errors import ConfigError
from kernel.sink import ListSink
from kernel.source import RunContext
from tests.traffic.helpers import G, SimClock, junction

BUTTON = DetectorConfig(name="btn_ew", group="ped_ew", kind="button", source="cabinet", input="push_ew")


def _ix(max_wait: float = 90.0) -> IntersectionConfig:
    data = junction().model_dump(by_alias=True, exclude_none=True)
    data["detectors"] = [*data["detectors"], BUTTON.model_dump(exclude_none=True)]
    data["limits"] = {**data.get("limits", {}), "ped_max_wait_s": max_wait}
    return IntersectionConfig.model_validate(data)


def _make(ix: IntersectionConfig) -> tuple[Intersection, ControllerEmulator, SimClock]:
    clock = SimClock(0.0)
    emu = ControllerEmulator(program_card(ix), clock, watchdog_s=0.5)
    out = ModbusSignalController(tuple(g.name for g in ix.groups), DirectLink(emu))
    inter = Intersection(ix, out, clock, mode="actuated")
    inter.start()
    return inter, emu, clock


def _run(inter: Intersection, clock: SimClock, seconds: float, walk: str) -> list[float]:
    """Tick with the main road always busy (its loop occupied); when ``walk`` showed walking."""
    walks: list[float] = []
    end = clock.t + seconds
    while clock.t < end:
        clock.t = round(clock.t + 0.1, 6)
        inter.board.loop("loop_ns", True)
        inter.board.loop("loop_ew", int(clock.t * 10) % 30 == 0)
        inter.tick()
        assert inter.envelope.latched is None, inter.envelope.latched
        if inter.envelope.shown()[walk] == G:
            walks.append(clock.t)
    return walks


def test_no_call_no_walk_and_a_call_is_served_within_its_max_wait() -> None:
    ix = _ix(max_wait=90.0)
    inter, emu, clock = _make(ix)
    assert _run(inter, clock, 400, "ped_ew") == []  # nobody pressed: the crosswalk never walks
    assert _run(inter, clock, 1, "ped_ns")  # the one without buttons walks every cycle (checked below)
    pressed = clock.t
    inter.board.loop("btn_ew", True)
    inter.board.loop("btn_ew", False)
    assert "ped_ew" in inter.board.calls
    walks = _run(inter, clock, 200, "ped_ew")
    assert walks, "the call was never served"
    assert walks[0] - pressed <= 90.0, walks[0] - pressed
    assert "ped_ew" not in inter.board.calls
    assert emu.monitor.faults == []
    assert inter.envelope.refusals == {}


def test_the_max_wait_cuts_the_busy_main_road_short() -> None:
    """The main road's loop never frees, so without the bound the ns stage runs its 45 s max every
    cycle; a 30 s bound makes it yield at its minimum."""
    inter, _, clock = _make(_ix(max_wait=30.0))
    _run(inter, clock, 60, "ped_ew")
    waits = []
    for _ in range(4):
        pressed = clock.t
        inter.board.loop("btn_ew", True)
        inter.board.loop("btn_ew", False)
        walks = _run(inter, clock, 120, "ped_ew")
        waits.append(walks[0] - pressed)
    assert max(waits) <= 30.0 + 0.2, waits


def test_a_button_must_call_a_pedestrian_group() -> None:
    data = junction().model_dump(by_alias=True, exclude_none=True)
    data["detectors"].append({"name": "btn", "group": "ns", "kind": "button"})
    with pytest.raises(ValueError, match=r"detectors\[\d+\]\.group: 'ns': a push button calls a pedestrian group"):
        IntersectionConfig.model_validate(data)


def test_gpio_button_places_a_call_in_the_running_intersection() -> None:
    ix = _ix()
    emu = ControllerEmulator(program_card(ix), watchdog_s=5.0)
    output = ModbusSignalController(tuple(g.name for g in ix.groups), DirectLink(emu))
    traffic = TrafficSource(ix, "Asia/Ho_Chi_Minh", output=output)
    gpio = GpioSource(
        GpioDeviceConfig.model_validate(
            {
                "driver": "gpio",
                "name": "cabinet",
                "pin_factory": "mock",
                "inputs": [{"name": "push_ew", "pin": 24, "kind": "button", "bounce_s": 0}],
            }
        ),
        factory=mock_factory(),
    )
    pin = gpio.bank.factory.pin(24)
    ctx = RunContext(site=None, sink=ListSink())  # type: ignore[arg-type]
    board = traffic.intersection.board

    async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
        end = asyncio.get_running_loop().time() + timeout
        while not pred():
            assert asyncio.get_running_loop().time() < end
            await asyncio.sleep(0.02)

    async def main() -> None:
        tasks = [asyncio.create_task(s.run(ctx)) for s in (traffic, gpio)]
        try:
            await asyncio.sleep(0.5)
            assert "ped_ew" not in board.calls
            pin.drive_low()  # pressed (contact to ground)
            await asyncio.sleep(0.1)
            pin.drive_high()
            await until(lambda: "ped_ew" in board.calls or traffic.inbox.received >= 1)
            assert "ped_ew" in board.calls or traffic.intersection.envelope.shown()["ped_ew"] == G
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    try:
        asyncio.run(main())
    finally:
        gpio.bank.close()


def test_a_button_source_must_be_a_button_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from agent.config import load_config
    from tests.traffic.helpers import SITE

    data = yaml.safe_load(SITE.read_text())
    data["traffic"]["intersections"][0]["detectors"].append(
        {"name": "btn", "group": "ped_ew", "kind": "button", "source": "nowhere", "input": "push"}
    )
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any("detectors[8].source: 'nowhere' is not a gpio device" in p for p in info.value.problems)


def _modbus_ix(port: int, buttons: int, button_input: str) -> IntersectionConfig:
    data = junction().model_dump(by_alias=True, exclude_none=True)
    data["output"] = {"driver": "modbus", "host": "127.0.0.1", "port": port, "buttons": buttons}
    data["detectors"] = [
        *data["detectors"],
        {"name": "btn_ew", "group": "ped_ew", "kind": "button", "input": button_input},
    ]
    return IntersectionConfig.model_validate(data)


def test_a_push_button_on_the_signal_controller_places_a_call_over_modbus_tcp() -> None:
    """The controller's own button input (input register 3+n, latched until read) reaches the board
    of the intersection running in its thread, through the output built from the config."""
    import time

    from drivers.signals.emulator import ModbusSignalEmulator
    from tests.conftest import free_port

    port = free_port()
    ix = _modbus_ix(port, 2, "controller:1")
    emu = ControllerEmulator(program_card(ix), watchdog_s=1.0, buttons=2)
    server = ModbusSignalEmulator(emu, port=port)
    server.start()
    traffic = TrafficSource(ix, "Asia/Ho_Chi_Minh")  # output from the config: Modbus TCP
    board = traffic.intersection.board
    thread = traffic.start()
    try:
        time.sleep(1.0)
        assert traffic.intersection.envelope.latched is None
        assert "ped_ew" not in board.calls
        emu.press(0)  # a button no detector names
        time.sleep(0.5)
        assert "ped_ew" not in board.calls
        emu.press(1)
        end = time.monotonic() + 2.0
        while "ped_ew" not in board.calls and time.monotonic() < end:
            time.sleep(0.02)
        assert "ped_ew" in board.calls
    finally:
        traffic.stop(thread)
        server.stop()


def test_a_controller_button_must_exist() -> None:
    with pytest.raises(ValueError, match=r"detectors\[\d+\]\.input: 'controller:2' is not a push button"):
        _modbus_ix(5020, 2, "controller:2")
