"""Scan pieces that need no agent: timing from the baud rate, Read Device Identification parsing
(property-tested), two devices at one unit id, a device that never stops talking, bad bounds."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.emulator import EmulatedDevice, Emulator
from drivers.modbus.profile import Profile, load_profile
from kernel.errors import ConfigError, FrameError
from provisioning.scan import Scanner, ScanOptions, char_time, parse_device_id, probe_timeout, probe_wire_s
from provisioning.scan_cli import parse_bauds, parse_units
from provisioning.scan_config import propose_devices
from provisioning.scan_rig import device_id_answer, start_scan_line, stop_scan_line


def test_probe_timeout_follows_the_baud_rate():
    # 3.5 characters of end-of-frame silence plus the margin: far below a fixed second.
    assert probe_timeout(9600, 0.02) == pytest.approx(3.5 * 10 / 9600 + 0.02)
    assert probe_timeout(1200, 0.02) > probe_timeout(9600, 0.02) > probe_timeout(115200, 0.02)
    assert char_time(9600, "E") == pytest.approx(11 / 9600)
    # An absent unit costs the line its timeout; a present one its answer.
    assert probe_wire_s(9600, 0.05, answered=False) > probe_wire_s(9600, 0.05, answered=True)


text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40)


@given(text, text)
def test_device_identification_round_trip(vendor, product):
    profile = Profile.model_validate(
        {
            "model": product,
            "manufacturer": vendor,
            "points": [{"name": "x", "table": "input_register", "address": 0}],
        }
    )
    ident = parse_device_id(device_id_answer(EmulatedDevice(profile, 1)))
    assert ident == {"vendor": vendor.strip(), "product": product.strip(), "revision": "1.0"}


@given(st.binary(max_size=64))
def test_device_identification_parser_never_crashes(data):
    try:
        parse_device_id(bytes([0x2B, 0x0E]) + data)
    except FrameError:
        pass


def test_bounds_are_checked_with_one_clear_line():
    assert parse_units("1-3,7") == [1, 2, 3, 7]
    with pytest.raises(ConfigError) as exc:
        parse_units("0-300")
    assert exc.value.exit_code == 2
    assert "'0-300'" in str(exc.value)
    assert parse_bauds("9600,19200") == [9600, 19200]
    with pytest.raises(ConfigError):
        parse_bauds("fast")


async def test_two_devices_at_one_unit_are_reported_not_misidentified():
    a = EmulatedDevice(load_profile("xy-md02"), 5, seed=1)
    b = EmulatedDevice(load_profile("soil-7in1"), 5, seed=2)
    c = EmulatedDevice(load_profile("xy-md02"), 2, seed=3)
    line = await start_scan_line([(a, 9600), (b, 9600), (c, 9600)])
    try:
        result = await Scanner(
            ScanOptions(line.pair.path, bauds=(9600,), units=range(1, 7), margin_s=0.06)
        ).run()
    finally:
        await stop_scan_line(line)
    assert [d.unit for d in result.devices] == [2]
    assert any("two devices probably share unit id 5" in m.render("en") for m in result.problems)
    assert any("dùng chung địa chỉ 5" in m.render("vi") for m in result.problems)
    assert [d["unit"] for d in propose_devices(result)] == [2]


async def test_a_device_that_never_stops_talking_is_reported():
    dev = EmulatedDevice(load_profile("xy-md02"), 1)
    line = await start_scan_line([(dev, 9600)], babbling=True)
    try:
        result = await Scanner(
            ScanOptions(line.pair.path, bauds=(9600,), units=range(1, 4), margin_s=0.06)
        ).run()
    finally:
        await stop_scan_line(line)
    assert result.devices == []
    assert any("never goes quiet" in m.render("en") for m in result.problems)


async def test_a_babbler_is_heard_through_a_stalled_event_loop():
    """The rig's babbler shares the scanner's loop; a real one talks on while the reader's process
    stands still. Stalls longer than the 20 ms quiet window (a loaded machine, a garbage collection)
    must not make the line look quiet: the old rig failed this every time."""

    async def stall() -> None:
        while True:
            await asyncio.sleep(0.05)
            time.sleep(0.03)  # the whole loop stops

    dev = EmulatedDevice(load_profile("xy-md02"), 1)
    line = await start_scan_line([(dev, 9600)], babbling=True)
    staller = asyncio.create_task(stall())
    try:
        result = await Scanner(
            ScanOptions(line.pair.path, bauds=(9600,), units=range(1, 4), margin_s=0.06)
        ).run()
    finally:
        staller.cancel()
        await stop_scan_line(line)
    assert result.devices == []
    assert any("never goes quiet" in m.render("en") for m in result.problems)


async def test_tcp_port_behind_a_transparent_serial_gateway_is_scanned_with_rtu_frames():
    emu = Emulator()
    port = await emu.add_rtu_gateway([EmulatedDevice(load_profile("xy-md02"), 3)], baudrate=9600)
    try:
        result = await Scanner(
            ScanOptions(f"tcp://127.0.0.1:{port}", bauds=(9600, 19200), units=range(1, 5), margin_s=0.12)
        ).run()
    finally:
        await emu.close()
    assert result.framing == "rtu"
    assert [(d.unit, d.profile) for d in result.devices] == [(3, "xy-md02")]
    # The gateway fixes the serial speed: the walk is one speed, and the scan says so.
    assert result.probes == 4
    assert any("gateway sets the serial speed" in m.render("en") for m in result.notes)
    entry = propose_devices(result)[0]["line"]
    assert entry == {"type": "rtu-over-tcp", "host": "127.0.0.1", "port": port, "baudrate": 9600}


async def test_one_device_answering_under_two_parities_is_proposed_once():
    line = await start_scan_line([(EmulatedDevice(load_profile("xy-md02"), 2), 9600)])
    try:
        result = await Scanner(
            ScanOptions(line.pair.path, bauds=(9600,), parities=("N", "E"), units=range(1, 4), margin_s=0.12)
        ).run()
    finally:
        await stop_scan_line(line)
    assert [(d.unit, d.parity) for d in result.devices] == [(2, "N")]
    assert any("parity N and E" in m.render("en") for m in result.notes)
    assert len(propose_devices(result)) == 1


async def test_a_malformed_port_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        await Scanner(ScanOptions("tcp://nohostport")).run()
    assert exc.value.exit_code == 2
    assert "tcp://HOST:PORT" in str(exc.value)
