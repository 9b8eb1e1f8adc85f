"""GPIO relay heads under gpiozero's MockFactory: the envelope drives them and reads the pins back."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from control.traffic.config import GpioOutputConfig, IntersectionConfig
from control.traffic.envelope import SafetyEnvelope
from drivers.signals.gpio import GpioSignalHeads
from drivers.signals.indications import Indication
from tests.traffic.helpers import GY, G, R, SimClock, Y, junction

HEADS = {
    "ns": {"red": 2, "yellow": 3, "green": 4},
    "ns_left": {"red": 5, "yellow": 6, "green": 7, "yield_green": 8},
    "ew": {"red": 9, "yellow": 10, "green": 11},
    "ew_left": {"red": 12, "yellow": 13, "green": 14, "yield_green": 15},
    "ped_ns": {"red": 16, "green": 17},
    "ped_ew": {"red": 18, "green": 19},
}


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def gpio_junction() -> IntersectionConfig:
    data = junction().model_dump(by_alias=True)
    data["output"] = {"driver": "gpio", "heads": HEADS}
    return IntersectionConfig.model_validate(data)


def test_envelope_drives_relays_and_reads_them_back(factory) -> None:
    ix = gpio_junction()
    assert isinstance(ix.output, GpioOutputConfig)
    heads = GpioSignalHeads(ix.output.heads, pin_factory=factory)
    assert heads.read_back().indications["ns"] == Indication.FLASH  # powers up flashing
    clock = SimClock()
    env = SafetyEnvelope(ix, heads, clock)
    env.start()
    assert factory.pin(2).state
    assert not factory.pin(4).state
    clock.t += 11
    env.command({"ns": G, "ns_left": GY, "ew": R, "ew_left": R, "ped_ns": G, "ped_ew": R})
    assert factory.pin(4).state
    assert factory.pin(8).state
    assert factory.pin(17).state
    assert not factory.pin(2).state
    assert not factory.pin(7).state
    clock.t += 7
    env.command({"ns": G, "ns_left": GY, "ew": R, "ew_left": R, "ped_ns": Y, "ped_ew": R})
    assert env.latched is None
    assert heads.read_back().indications["ped_ns"] == Y
    heads.close()


def test_stuck_relay_is_an_invalid_readback_and_flashes(factory) -> None:
    ix = gpio_junction()
    assert isinstance(ix.output, GpioOutputConfig)
    heads = GpioSignalHeads(ix.output.heads, pin_factory=factory)
    clock = SimClock()
    env = SafetyEnvelope(ix, heads, clock)
    env.start()
    factory.pin(9).state = False  # ew red lamp relay drops: the head goes dark
    env.check()
    assert env.latched == "readback_invalid"
    assert heads.read_back().indications["ns"] == Indication.FLASH
    assert heads.read_back().indications["ped_ns"] == Indication.DARK
    heads.close()


def test_permissive_group_without_its_aspect_is_a_config_error() -> None:
    data = junction().model_dump(by_alias=True)
    heads = dict(HEADS)
    heads["ns_left"] = {"red": 5, "yellow": 6, "green": 7}
    data["output"] = {"driver": "gpio", "heads": heads}
    with pytest.raises(ValueError, match=r"output.heads.ns_left.yield_green"):
        IntersectionConfig.model_validate(data)
