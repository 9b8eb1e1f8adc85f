"""The Modbus signal driver against the emulated controller served by pymodbus over TCP."""

from __future__ import annotations

import time

import pytest

from control.traffic.card import program_card
from control.traffic.envelope import SafetyEnvelope
from drivers.signals.emulator import ControllerEmulator, ModbusSignalEmulator
from drivers.signals.indications import Indication
from drivers.signals.modbus import ModbusSignalController, ThreadLink
from hil.linkcut import CuttableLink
from tests.conftest import free_port
from tests.traffic.helpers import GY, G, R, junction


def tcp_link(port: int) -> ThreadLink:
    return ThreadLink.tcp("127.0.0.1", port, unit=1, timeout_s=0.3)


@pytest.fixture
def served():
    ix = junction()
    emu = ControllerEmulator(program_card(ix), watchdog_s=0.5)
    server = ModbusSignalEmulator(emu, port=free_port())
    server.start()
    link = CuttableLink(("127.0.0.1", server.port))
    yield ix, emu, link
    link.close()
    server.stop()


def test_envelope_runs_the_controller_over_tcp(served) -> None:
    ix, emu, link = served
    driver = ModbusSignalController(tuple(g.name for g in ix.groups), tcp_link(link.port))
    env = SafetyEnvelope(ix, driver)
    assert emu.flashing  # the cabinet powers up flashing
    env.start()
    assert env.latched is None
    assert not emu.flashing
    state = {g.name: R for g in ix.groups}
    env.command(state)
    shown = driver.read_back()
    assert shown.seq == emu.seq
    assert set(shown.indications.values()) == {R}
    driver.close()


def test_conflict_written_below_the_envelope_trips_the_emulator(served) -> None:
    ix, _, link = served
    raw = tcp_link(link.port)
    driver = ModbusSignalController(tuple(g.name for g in ix.groups), raw)
    driver.reset()
    codes = {"ns": G, "ns_left": GY, "ew": G, "ew_left": R, "ped_ns": R, "ped_ew": R}
    driver.write(codes, 7)  # no envelope: straight to the cabinet
    shown = driver.read_back()
    assert shown.fault is not None
    assert shown.fault in ("conflict", "red_clearance")
    assert set(shown.indications.values()) <= {Indication.FLASH, Indication.DARK}
    driver.close()


def test_lost_link_flashes_within_one_second(served) -> None:
    ix, emu, link = served
    driver = ModbusSignalController(tuple(g.name for g in ix.groups), tcp_link(link.port))
    env = SafetyEnvelope(ix, driver)
    env.start()
    state = {g.name: R for g in ix.groups}
    for _ in range(5):
        env.command(state)
        env.check()
        time.sleep(0.1)
    t0 = time.monotonic()
    link.cut()
    while env.latched is None and time.monotonic() - t0 < 5:
        try:
            env.command(state)
        except Exception:
            break
        env.check()
        time.sleep(0.1)
    agent_s = time.monotonic() - t0
    while not emu.flashing and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    device_s = time.monotonic() - t0
    assert env.latched == "link_lost"
    assert emu.fault == "watchdog"
    # 0.3 s Modbus timeout plus one 0.1 s tick; watchdog 0.5 s; a loaded CI box gets some margin.
    assert agent_s < 1.5, (agent_s, device_s)
    assert device_s < 1.5, (agent_s, device_s)
    driver.close()
