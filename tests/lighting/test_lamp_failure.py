"""Lamp-failure and stuck-contactor alarms from an emulated Eastron SDM120 (the Modbus driver's
profile-driven emulator on Modbus TCP), with the lamp bank following the mock GPIO relay and PWM pins;
the meter reader also reads one phase of an SDM630."""

from __future__ import annotations

import asyncio
import time

from control.lighting.config import CircuitConfig, LightingConfig, MeterConfig
from control.lighting.emulator import LampBank, SdmEmulator
from control.lighting.failure import expected_power, judge
from control.lighting.kind import build_meters
from control.lighting.meter import MeterSample, SdmMeter
from control.lighting.outputs import OutputState
from drivers.modbus.link import ModbusLink
from kernel.readings import Priority
from tests.conftest import free_port
from tests.lighting.conftest import duty, lighting_dict, local_ts, make_controller, relay

NIGHT = local_ts(2026, 3, 10, 23, 0)  # c1 at 70 %
DAY = local_ts(2026, 3, 11, 13, 0)


def metered_cfg(port: int, settle_s: float = 0.0) -> LightingConfig:
    d = lighting_dict()
    d["circuits"][0]["meter"] = {
        "type": "sdm120",
        "host": "127.0.0.1",
        "port": port,
        "unit": 3,
        "timeout_s": 1,
    }
    d["circuits"][0]["settle_s"] = settle_s
    return LightingConfig.model_validate(d)


def alarms(readings, point):
    return [r for r in readings if r.point == point and r.priority in (Priority.ALARM, Priority.EVENT)]


async def with_meter(pins, settle_s, body):
    port = free_port()
    cfg = metered_cfg(port, settle_s)
    bank = LampBank(lambda: OutputState(relay(pins, 17), duty(pins, 18)), lamps=12, lamp_watts=100)
    emu = SdmEmulator(bank, unit=3)
    await emu.start("127.0.0.1", port)
    ctl = make_controller(cfg, pins, meters=build_meters(cfg))
    try:
        await body(ctl, bank, emu)
    finally:
        await ctl.close()
        await emu.stop()


def test_failed_lamp_raises_alarm_once_and_clears(pins):
    async def body(ctl, bank, emu):
        await ctl.step(NIGHT, time.monotonic())
        readings = await ctl.sample_meters(NIGHT)
        by_point = {r.point: r for r in readings}
        assert by_point["c1.expected_power"].value == 840.0  # 12 x 100 W x 70 %
        assert abs(by_point["c1.power"].value - 840 * 0.97) < 1
        assert not alarms(readings, "c1.lamp_failure")
        bank.failed = 2
        readings = await ctl.sample_meters(NIGHT + 30)
        alarm = alarms(readings, "c1.lamp_failure")
        assert len(alarm) == 1
        assert alarm[0].priority == Priority.ALARM
        assert alarm[0].value == 2
        assert alarm[0].meta is not None
        assert "2 of 12 lamps" in alarm[0].meta["text"]
        assert not alarms(await ctl.sample_meters(NIGHT + 60), "c1.lamp_failure")  # raised once
        bank.failed = 0  # repaired
        cleared = alarms(await ctl.sample_meters(NIGHT + 90), "c1.lamp_failure")
        assert len(cleared) == 1
        assert cleared[0].priority == Priority.EVENT
        assert cleared[0].value == 0

    asyncio.run(with_meter(pins, 0.0, body))


def test_current_when_commanded_off_is_an_alarm(pins):
    async def body(ctl, bank, emu):
        await ctl.step(DAY, time.monotonic())
        assert not relay(pins, 17)
        assert not alarms(await ctl.sample_meters(DAY), "c1.current_when_off")
        bank.stuck_on = True  # welded contactor: lamps burn by day
        alarm = alarms(await ctl.sample_meters(DAY + 30), "c1.current_when_off")
        assert len(alarm) == 1
        assert alarm[0].priority == Priority.ALARM
        assert "commanded off" in alarm[0].meta["text"]

    asyncio.run(with_meter(pins, 0.0, body))


def test_no_verdict_before_settle_delay(pins):
    async def body(ctl, bank, emu):
        bank.failed = 3
        await ctl.step(NIGHT, time.monotonic())
        assert not alarms(await ctl.sample_meters(NIGHT), "c1.lamp_failure")
        await asyncio.sleep(0.6)
        assert alarms(await ctl.sample_meters(NIGHT + 1), "c1.lamp_failure")[0].value == 3

    asyncio.run(with_meter(pins, 0.5, body))


def test_energy_counts_up_and_dead_meter_does_not_stop_control(pins):
    async def body(ctl, bank, emu):
        await ctl.step(NIGHT, time.monotonic())
        first = {r.point: r.value for r in await ctl.sample_meters(NIGHT)}["c1.energy"]
        await asyncio.sleep(0.3)
        second = {r.point: r.value for r in await ctl.sample_meters(NIGHT + 1)}
        assert second["c1.energy"] >= first
        assert bank.energy_kwh > 0
        await emu.stop()
        readings = await ctl.sample_meters(NIGHT + 2)
        assert [r.point for r in readings] == ["c1.meter_fault"]
        await ctl.step(DAY, time.monotonic())  # the schedule goes on without its meter
        assert not relay(pins, 17)

    asyncio.run(with_meter(pins, 0.0, body))


def test_judge_tolerance_and_current_check():
    c = CircuitConfig.model_validate(
        {
            "name": "c",
            "group": "g",
            "output": {"type": "gpio", "relay_pin": 2},
            "lamps": 10,
            "lamp_watts": 100,
            "lamp_min_watts": 10,
            "min_level": 20,
            "tolerance_pct": 10,
        }
    )
    assert expected_power(c, OutputState(True, 5)) == 10 * (10 + 90 * 0.2)  # below min_level: raised
    assert expected_power(c, OutputState(False, 80)) == 0
    ok = MeterSample(230, 1000 / (230 * 0.95), 1000, 0, 0)
    assert judge(c, OutputState(True, 100), ok, True).failed_lamps == 0
    # Power looks fine but the current is a third short (e.g. a meter CT on the wrong phase share).
    low_a = MeterSample(230, 0.6 * 1000 / (230 * 0.95), 1000, 0, 0)
    assert judge(c, OutputState(True, 100), low_a, True).failed_lamps == 4
    one_out = MeterSample(230, 900 / (230 * 0.95), 900, 0, 0)
    assert judge(c, OutputState(True, 100), one_out, True).failed_lamps == 0  # within 10 %
    two_out = MeterSample(230, 800 / (230 * 0.95), 800, 0, 0)
    assert judge(c, OutputState(True, 100), two_out, True).failed_lamps == 2
    assert not judge(c, OutputState(True, 100), two_out, False).judged


def test_meter_reads_one_phase_of_sdm630():
    async def main():
        bank = LampBank(lambda: OutputState(True, 100), lamps=4, lamp_watts=250, efficiency=1.0)
        emu = SdmEmulator(bank, unit=9, model="sdm630", phase=3)
        port = free_port()
        await emu.start("127.0.0.1", port)
        cfg = MeterConfig(type="sdm630", host="127.0.0.1", port=port, unit=9, phase=3)
        meter = SdmMeter(cfg, ModbusLink.tcp("127.0.0.1", port, 9, 1.0))
        try:
            sample = await meter.read()
            assert sample.power == 1000.0
            cfg1 = MeterConfig(type="sdm630", host="127.0.0.1", port=port, unit=9, phase=1)
            phase1 = SdmMeter(cfg1, ModbusLink.tcp("127.0.0.1", port, 9, 1.0))
            assert (await phase1.read()).power != 1000.0  # other phases: the emulator's own motion
            await phase1.close()
        finally:
            await meter.close()
            await emu.stop()

    asyncio.run(main())


def test_calibration_finds_a_single_lamp_and_survives_restart(pins, tmp_path):
    """12 lamps drawing 9 % under the model: with the model's 15 % tolerance one dead lamp (8.3 %) is
    invisible; calibrated on 3 samples with a 4 % tolerance it raises an alarm for exactly one lamp."""
    port = free_port()
    d = lighting_dict(state_path=str(tmp_path / "state.json"))
    d["circuits"][0].update(
        meter={"type": "sdm120", "host": "127.0.0.1", "port": port, "unit": 3, "timeout_s": 1},
        calibrate_samples=3,
        calibrated_tolerance_pct=4,
    )
    cfg = LightingConfig.model_validate(d)

    async def main():
        bank = LampBank(
            lambda: OutputState(relay(pins, 17), duty(pins, 18)), lamps=12, lamp_watts=100, efficiency=0.91
        )
        emu = SdmEmulator(bank, unit=3)
        await emu.start("127.0.0.1", port)
        try:
            ctl = make_controller(cfg, pins, tmp_path / "state.json", meters=build_meters(cfg))
            await ctl.step(NIGHT, time.monotonic())
            learned = []
            for k in range(3):
                learned += [r for r in await ctl.sample_meters(NIGHT + k) if r.point == "c1.calibration"]
            assert len(learned) == 1
            ratio = learned[0].value
            assert isinstance(ratio, float)
            assert abs(ratio - 0.91) < 0.005
            await ctl.close()
            # After a reboot the learned ratio comes back from the state file.
            ctl = make_controller(cfg, pins, tmp_path / "state.json", meters=build_meters(cfg))
            await ctl.step(NIGHT + 10, time.monotonic())
            scale = ctl.circuits["c1"].detector.scale
            assert scale is not None
            assert abs(scale - ratio) < 1e-3
            bank.failed = 1
            alarm = alarms(await ctl.sample_meters(NIGHT + 20), "c1.lamp_failure")
            assert [r.value for r in alarm] == [1]
            assert alarm[0].priority == Priority.ALARM
            # Lamp replaced: recalibrate, and learning starts over (no verdict from the old ratio).
            bank.failed = 0
            assert (
                ctl.apply_command({"action": "recalibrate", "circuit": "c1"}, NIGHT + 30).outcome
                == "accepted"
            )
            assert ctl.circuits["c1"].detector.scale is None
            refused = ctl.apply_command({"action": "recalibrate", "circuit": "c2"}, NIGHT + 30)
            assert refused.outcome == "refused"
            await ctl.close()
        finally:
            await emu.stop()

    asyncio.run(main())


def test_without_calibration_one_lamp_of_twelve_is_within_tolerance(pins):
    async def body(ctl, bank, emu):
        await ctl.step(NIGHT, time.monotonic())
        bank.failed = 1
        assert not alarms(await ctl.sample_meters(NIGHT), "c1.lamp_failure")  # 1/12 < 15 % + 3 % drift

    asyncio.run(with_meter(pins, 0.0, body))


def test_meter_faults_are_reported_and_recovered(pins):
    """Faults injected in the emulated SDM (no answer, a dropped TCP connection, a broken MBAP header,
    an exception response): each sample under fault is a meter_fault event, control goes on, and the
    next sample after the fault clears is good again (the link reconnects)."""
    from drivers.modbus.emulator import Fault

    async def body(ctl, bank, emu):
        await ctl.step(NIGHT, time.monotonic())
        for fault in (Fault.NO_ANSWER, Fault.TCP_DROP, Fault.CRC, Fault.EXCEPTION):
            emu.device.set_fault(fault)
            readings = await ctl.sample_meters(NIGHT)
            assert [r.point for r in readings] == ["c1.meter_fault"], fault
            emu.device.set_fault(Fault.NONE)
            await ctl.step(NIGHT + 1, time.monotonic())
            assert relay(pins, 17)
            good = {r.point: r.value for r in await ctl.sample_meters(NIGHT + 2)}
            assert good["c1.expected_power"] == 840.0, fault

    asyncio.run(with_meter(pins, 0.0, body))
