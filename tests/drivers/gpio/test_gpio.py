"""GPIO bank and ``gpio`` device kind on gpiozero's MockFactory (with MockPWMPin)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agent.config import parse_config
from drivers.gpio.bank import GpioBank
from drivers.gpio.driver import Config, GpioSource, build_sources
from drivers.gpio.factory import ENV_VAR, make_pin_factory, mock_factory
from drivers.gpio.registry import GpioBanks
from kernel.clock import Clock
from kernel.errors import DeviceError, WriteRefused
from kernel.metrics import Metrics
from kernel.readings import ClockQuality, Priority, Quality
from kernel.sink import ListSink
from kernel.source import RunContext

CABINET = {
    "driver": "gpio",
    "name": "cabinet",
    "pin_factory": "mock",
    "report_period_s": 0.5,
    "outputs": [
        {"name": "contactor", "pin": 17, "kind": "relay", "feedback_pin": 5},
        {"name": "dimmer", "pin": 18, "kind": "pwm", "initial": 0.5},
        {"name": "fan", "pin": "GPIO22", "kind": "relay", "active_high": False},
    ],
    "inputs": [
        {"name": "door", "pin": 27, "kind": "door"},
        {"name": "photocell", "pin": 23, "kind": "photocell", "pull_up": False},
        {"name": "button", "pin": 24, "kind": "button"},
        {"name": "loop1", "pin": 25, "kind": "loop", "bounce_s": 0},
    ],
}


def make_bank() -> GpioBank:
    cfg = Config.model_validate(CABINET)
    return GpioBank("cabinet", cfg, mock_factory(), Clock(override=ClockQuality.SYNCED), Metrics())


def test_relay_switches_and_reads_back():
    bank = make_bank()
    try:
        pin = bank.factory.pin(17)
        assert bank.read_back("contactor") == 0.0
        assert bank.set_relay("contactor", True) is True
        assert pin.state == 1
        assert bank.read_back("contactor") == 1.0
        assert bank.set_relay("contactor", False) is False
        assert pin.state == 0
        # Active-low relay: "on" drives the pin low.
        bank.set_relay("fan", True)
        assert bank.factory.pin(22).state == 0
        assert bank.read_back("fan") == 1.0
    finally:
        bank.close()


def test_pwm_dims_and_reads_back():
    bank = make_bank()
    try:
        pin = bank.factory.pin(18)
        assert bank.read_back("dimmer") == pytest.approx(0.5)
        assert bank.set_duty("dimmer", 0.25) == pytest.approx(0.25)
        assert pin.state == pytest.approx(0.25)
        assert pin.frequency == 200
        bank.set_duty("dimmer", 1.0)
        assert pin.state == pytest.approx(1.0)
        with pytest.raises(WriteRefused, match=r"outside 0\.\.1"):
            bank.set_duty("dimmer", 1.5)
        assert pin.state == pytest.approx(1.0)
        with pytest.raises(WriteRefused, match="is a pwm output"):
            bank.set_relay("dimmer", True)
        with pytest.raises(WriteRefused, match="no output 'nope'"):
            bank.set_relay("nope", True)
    finally:
        bank.close()


def test_feedback_mismatch_is_an_alarm():
    bank = make_bank()
    try:
        fb = bank.factory.pin(5)
        bank.set_relay("contactor", True)
        fb.drive_low()  # auxiliary contact closed (pulled up input, contact to ground): agrees
        snap = {r.point: r for r in bank.snapshot()}
        assert snap["contactor"].quality == Quality.GOOD
        assert "contactor.fault" not in snap
        fb.drive_high()  # contact open while the relay is commanded on: welded/failed relay
        snap = {r.point: r for r in bank.snapshot()}
        assert snap["contactor"].quality == Quality.BAD
        assert snap["contactor.fault"].priority == Priority.ALARM
    finally:
        bank.close()


def test_config_rejects_reused_pins_and_bad_initial():
    bad = dict(CABINET, inputs=[{"name": "door", "pin": "GPIO17"}])
    with pytest.raises(ValueError, match=r"inputs\[0\].pin: 'GPIO17' is used twice"):
        Config.model_validate(bad)
    bad = dict(CABINET, outputs=[{"name": "r", "pin": 4, "initial": 0.5}])
    with pytest.raises(ValueError, match="a relay starts at 0 or 1"):
        Config.model_validate(bad)


def test_site_config_accepts_gpio_kind():
    cfg = parse_config(
        {"site": {"id": "s1", "name": "S", "location": {"lat": 21.18, "lon": 106.07}}, "devices": [CABINET]}
    )
    assert cfg.devices[0].driver == "gpio"


def test_factory_choice_by_name_and_env(monkeypatch):
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    monkeypatch.setenv(ENV_VAR, "mock")
    f = make_pin_factory("auto")
    assert isinstance(f, MockFactory)
    assert f.pin_class is MockPWMPin
    assert make_pin_factory("auto") is not f  # a fresh factory each time, nothing global
    monkeypatch.setenv(ENV_VAR, "bogus")
    with pytest.raises(DeviceError, match="bogus"):
        make_pin_factory("auto")
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(DeviceError, match="not usable here"):
        make_pin_factory("native")  # no /dev/gpiomem on the CI machine


async def _run_source(src: GpioSource, sink: ListSink, body) -> None:
    ctx = RunContext(site=None, sink=sink, clock=Clock(override=ClockQuality.SYNCED), metrics=Metrics())  # type: ignore[arg-type]
    task = asyncio.create_task(src.run(ctx))
    try:
        await body(ctx)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _wait_for(sink: ListSink, pred, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not any(pred(r) for r in sink.readings):
        assert loop.time() < end, f"timed out; have {[(r.point, r.value) for r in sink.readings]}"
        await asyncio.sleep(0.02)


def test_inputs_become_events_and_outputs_are_reported():
    cfg = Config.model_validate(CABINET)
    src = GpioSource(cfg, factory=mock_factory())
    sink = ListSink()
    door, loop1, photocell = (src.bank.factory.pin(n) for n in (27, 25, 23))

    async def body(ctx):
        await _wait_for(sink, lambda r: r.point == "dimmer" and r.priority == Priority.TELEMETRY)
        door.drive_low()  # contact to ground with pull-up: active = door open
        await _wait_for(sink, lambda r: r.point == "door" and r.priority == Priority.EVENT)
        # A vehicle closes the loop contact (to ground). Edges driven from another thread (as gpiozero's real backends do) reach the loop too.
        t = threading.Thread(target=lambda: [(loop1.drive_low(), loop1.drive_high()) for _ in range(3)])
        t.start()
        await asyncio.to_thread(t.join)
        photocell.drive_high()
        await _wait_for(sink, lambda r: r.point == "photocell" and r.priority == Priority.EVENT)
        src.bank.set_duty("dimmer", 0.8)
        await _wait_for(sink, lambda r: r.point == "dimmer" and r.priority == Priority.EVENT)
        await _wait_for(sink, lambda r: r.point == "loop1.count" and r.value == 3, timeout=3.0)

    try:
        asyncio.run(_run_source(src, sink, body))
    finally:
        src.bank.close()
    events = [r for r in sink.readings if r.priority == Priority.EVENT]
    door_ev = next(r for r in events if r.point == "door")
    assert door_ev.value is True
    assert door_ev.meta == {"kind": "door", "state": "open"}
    loop_ev = [r.value for r in events if r.point == "loop1"]
    assert loop_ev == [True, False] * 3  # each vehicle: loop occupied, then free
    photo = next(r for r in events if r.point == "photocell")
    assert photo.meta is not None
    assert photo.meta["state"] == "dark"
    dim = next(r for r in events if r.point == "dimmer")
    assert dim.value == pytest.approx(0.8)


def test_build_sources_registers_banks(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "mock")
    cfg = Config.model_validate(dict(CABINET, pin_factory="auto"))
    ctx = RunContext(site=None, sink=ListSink())  # type: ignore[arg-type]
    (src,) = build_sources([cfg], ctx)
    try:
        bank = GpioBanks.of(ctx).get("cabinet")
        assert bank is src.bank  # type: ignore[attr-defined]
        bank.set_relay("contactor", True)
        assert bank.factory.pin(17).state == 1
        with pytest.raises(DeviceError, match="have cabinet"):
            GpioBanks.of(ctx).get("other")
        other_run = RunContext(site=None, sink=ListSink())  # type: ignore[arg-type]
        with pytest.raises(DeviceError, match="have none"):
            GpioBanks.of(other_run).get("cabinet")  # banks belong to their run, not to the process
    finally:
        GpioBanks.of(ctx).unregister("cabinet")


def test_pin_already_in_use_is_a_device_error():
    factory = mock_factory()
    cfg = Config.model_validate(CABINET)
    first = GpioBank("a", cfg, factory)
    try:
        with pytest.raises(DeviceError, match="b: cannot set up gpio"):
            GpioBank("b", cfg, factory)
    finally:
        first.close()
    GpioBank("c", cfg, factory).close()  # released pins can be taken again


def test_output_wired_to_an_input_reports_the_edge():
    from gpiozero.pins.mock import MockConnectedPin, MockFactory

    # A plain MockFactory (no PWM here): output GPIO 26 is jumpered to input GPIO 19, so driving
    # the output calls the input's callback on the same thread, inside set_relay.
    factory = MockFactory()
    factory.pin(26, pin_class=MockConnectedPin, input_pin=factory.pin(19))
    cfg = Config.model_validate(
        {
            "driver": "gpio",
            "name": "bench",
            "outputs": [{"name": "out", "pin": 26}],
            "inputs": [{"name": "sense", "pin": 19, "kind": "contact", "pull_up": False, "bounce_s": 0}],
        }
    )
    bank = GpioBank("bench", cfg, factory)
    got: list = []

    async def main():
        queue: asyncio.Queue = asyncio.Queue(10)
        bank.attach(asyncio.get_running_loop(), queue)
        bank.set_relay("out", True)
        for _ in range(2):
            got.append(await asyncio.wait_for(queue.get(), 2))

    try:
        asyncio.run(main())
    finally:
        bank.close()
    assert {(r.point, r.value) for r in got} == {("out", 1.0), ("sense", True)}
