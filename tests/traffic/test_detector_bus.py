"""The detector bus: loop inputs and camera zones reach the intersection that names them as sources."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

from control.traffic.card import program_card
from control.traffic.config import DetectorConfig
from control.traffic.detectors import DetectorBoard, DetectorInbox
from control.traffic.source import TrafficSource
from drivers.gpio.driver import Config as GpioDeviceConfig
from drivers.gpio.driver import GpioSource
from drivers.gpio.factory import mock_factory
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.modbus import ModbusSignalController
from kernel.detectors import DetectorBus, LoopPresence, ZoneCount
from kernel.sink import ListSink
from kernel.source import RunContext
from tests.traffic.helpers import SimClock, junction

DETECTORS = [
    DetectorConfig(name="loop_ns", group="ns", source="cabinet", input="loop1"),
    DetectorConfig(name="zone_ew", group="ew", kind="zone", source="cam-1", input="approach"),
    DetectorConfig(name="loop_ew", group="ew"),  # fed directly (no source)
]


def test_inbox_keeps_only_its_sources_and_applies_on_the_owner_side() -> None:
    clock = SimClock()
    board = DetectorBoard(DETECTORS, clock)
    inbox = DetectorInbox(DETECTORS, maxlen=4)
    bus = DetectorBus()
    bus.subscribe(inbox.on_event)
    bus.publish(LoopPresence("cabinet", "loop1", True))
    bus.publish(LoopPresence("cabinet", "door", True))  # not a detector here
    bus.publish(ZoneCount("cam-2", "approach", 5, 5))  # another camera
    bus.publish(ZoneCount("cam-1", "approach", 4, 3, 18.0))
    bus.publish(LoopPresence("cam-1", "approach", True))  # a zone is not a loop
    assert inbox.received == 2
    assert board.gap(["ns"]) == math.inf  # nothing applied until the owner does it
    assert inbox.apply(board) == 2
    assert board.gap(["ns"]) == 0.0
    assert board.zones_fresh(["ew"])
    assert (board.count(["ew"]), board.halting(["ew"]), board.queue_m(["ew"])) == (4, 3, 18.0)
    clock.t += 3.0
    assert board.gap(["ns"]) == 0.0  # a vehicle standing on the loop keeps the gap closed
    assert inbox.apply(board) == 0  # a tick with no edge
    bus.publish(LoopPresence("cabinet", "loop1", False))
    inbox.apply(board)
    clock.t += 2.0
    assert board.gap(["ns"]) == 2.0
    for _ in range(10):  # bounded: the oldest events go first
        bus.publish(LoopPresence("cabinet", "loop1", True))
    assert inbox.apply(board) == 4


def test_gpio_loop_reaches_the_running_intersection() -> None:
    ix = junction().model_copy(update={"detectors": DETECTORS})
    emu = ControllerEmulator(program_card(ix), watchdog_s=5.0)
    output = ModbusSignalController(tuple(g.name for g in ix.groups), DirectLink(emu))
    traffic = TrafficSource(ix, "Asia/Ho_Chi_Minh", output=output)
    gpio = GpioSource(
        GpioDeviceConfig.model_validate(
            {
                "driver": "gpio",
                "name": "cabinet",
                "pin_factory": "mock",
                "inputs": [{"name": "loop1", "pin": 25, "kind": "loop", "bounce_s": 0}],
            }
        ),
        factory=mock_factory(),
    )
    pin = gpio.bank.factory.pin(25)
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
            await until(lambda: traffic.inbox.received >= 1)  # the loop's state at start
            assert board.gap(["ns"]) == math.inf  # free so far
            pin.drive_low()  # a vehicle on the loop (contact to ground)
            await until(lambda: board.gap(["ns"]) == 0.0)
            pin.drive_high()
            await until(lambda: board.gap(["ns"]) > 0.3)
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
    assert traffic.inbox.received >= 3


def test_a_detector_source_must_publish_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    import yaml

    from tests.conftest import agent_argv, agent_env
    from tests.traffic.helpers import SITE

    data = yaml.safe_load(SITE.read_text())
    data["traffic"]["intersections"][0]["detectors"][4].update(source="cam-9", input="approach")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    out = subprocess.run(
        agent_argv("config", "check", str(path)), env=agent_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert "traffic.intersections[0].detectors[4].source: 'cam-9' is not a camera device" in out.stderr
    assert "Traceback" not in out.stderr
