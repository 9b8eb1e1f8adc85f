"""Emulated devices: any profile works with no extra code, values move plausibly, faults toggle."""

from __future__ import annotations

import time

import pytest

from drivers.modbus import protocol as p
from drivers.modbus.emulator import EmulatedDevice, Fault, default_motion
from drivers.modbus.profile import load_profile, shipped_profiles


@pytest.mark.parametrize("name", shipped_profiles())
def test_every_shipped_profile_emulates_within_its_plausible_range(name):
    prof = load_profile(name)
    dev = EmulatedDevice(prof, unit=1, seed=3, update_every_s=0.0)
    for _ in range(200):
        dev.update()
        for pt in prof.points:
            if pt.type in ("string", "bits", "bool"):
                continue
            v = dev.value(pt.name)
            assert pt.min is None or v >= pt.min - 1e-9, (pt.name, v)
            assert pt.max is None or v <= pt.max + 1e-9, (pt.name, v)


def test_energy_counters_only_rise_and_temperatures_follow_the_day():
    prof = load_profile("eastron-sdm120")
    assert default_motion(prof.point("import_active_energy")).kind == "counter"
    assert default_motion(load_profile("xy-md02").point("temperature")).kind == "diurnal"
    dev = EmulatedDevice(prof, unit=1, update_every_s=0.0)
    seen = []
    for _ in range(20):
        time.sleep(0.002)
        dev.update()
        seen.append(dev.value("import_active_energy"))
    assert seen == sorted(seen)
    assert seen[-1] > seen[0]
    volts = set()
    for _ in range(50):
        dev.update()
        volts.add(round(dev.value("voltage"), 6))
    assert len(volts) > 10  # it moves
    assert all(215 < v < 245 for v in volts)  # around its profile's 230 V hint, not all over 0-300


def test_requests_are_served_and_refused_like_a_device():
    dev = EmulatedDevice(load_profile("soil-7in1"), unit=1)
    dev.set_value("moisture", 40.0)
    ok = dev.handle(p.read_request(3, 0, 7))
    assert ok[:2] == bytes([3, 14])
    assert int.from_bytes(ok[2:4], "big") == 400
    assert dev.handle(p.read_request(3, 5, 10)) == bytes([0x83, 2])  # past the map: illegal address
    assert dev.handle(p.read_request(3, 0, 126)) == bytes([0x83, 3])  # too many: illegal value
    assert dev.handle(bytes([0x2B, 0x0E, 0x01, 0x00])) == bytes([0xAB, 1])  # unknown function
    assert dev.handle(p.write_register_request(0, 1)) == bytes([0x86, 2])  # not writable
    dev.set_fault(Fault.EXCEPTION, 6)
    assert dev.handle(p.read_request(3, 0, 1)) == bytes([0x83, 6])
    dev.set_fault(Fault.REBOOT, 0.05)
    assert dev.rebooting
    time.sleep(0.06)
    assert not dev.rebooting
    assert dev.fault is Fault.NONE
    assert dev.value("moisture") == pytest.approx(40.0)  # the physical quantity survives the reboot
