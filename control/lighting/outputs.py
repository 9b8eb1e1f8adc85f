"""Lighting outputs: switch a circuit, set its dim level, read back what the hardware shows.

:class:`GpioLightingOutput` drives a contactor relay and a PWM dimming line with gpiozero (any pin
factory, :class:`gpiozero.pins.mock.MockFactory` in tests). :class:`ModbusLightingOutput` writes a coil
and a holding register of a Modbus TCP lighting controller (through the shared Modbus driver) and
reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gpiozero import DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice

from control.lighting.config import LightState, OutputConfig
from control.lighting.modbus_link import ModbusLink
from drivers.gpio.registry import GpioBanks


@dataclass(frozen=True)
class OutputState:
    """What a circuit output shows: contactor on or off and the dim level (percent)."""

    on: bool
    level: int


class LightingOutput(Protocol):
    """One circuit's output."""

    async def apply(self, on: bool, level: int) -> None:
        """Switch the circuit and set its dim level."""
        ...

    async def read_back(self) -> OutputState:
        """The state the hardware reports now."""
        ...

    async def close(self) -> None:
        """Release pins or connections."""
        ...


class GpioLightingOutput:
    """A relay (contactor coil) on one pin and PWM dimming on another; optional feedback contact.

    The pins start in ``initial`` (the default light state), so from power-up until the controller's
    first decision the circuit is in a defined state.
    """

    def __init__(self, cfg: OutputConfig, initial: LightState, pin_factory: Any = None) -> None:
        if cfg.type != "gpio" or cfg.relay_pin is None:
            raise ValueError("GpioLightingOutput needs an output of type gpio")
        self.cfg = cfg
        self.relay = DigitalOutputDevice(
            cfg.relay_pin,
            active_high=cfg.relay_active_high,
            initial_value=initial.on,
            pin_factory=pin_factory,
        )
        self.dim: PWMOutputDevice | None = None
        self.feedback: DigitalInputDevice | None = None
        try:
            if cfg.dim_pin is not None:
                self.dim = PWMOutputDevice(
                    cfg.dim_pin,
                    active_high=cfg.dim_active_high,
                    initial_value=initial.level / 100.0,
                    frequency=cfg.pwm_frequency_hz,
                    pin_factory=pin_factory,
                )
            if cfg.feedback_pin is not None:
                self.feedback = DigitalInputDevice(cfg.feedback_pin, pull_up=False, pin_factory=pin_factory)
        except Exception:
            self._close_all()
            raise

    async def apply(self, on: bool, level: int) -> None:
        """Set the dim level first, then the contactor (no flash at full power when switching on dimmed)."""
        if self.dim is not None:
            self.dim.value = max(0, min(100, level)) / 100.0
        self.relay.value = bool(on)

    async def read_back(self) -> OutputState:
        """Relay state from the feedback contact if wired, else from the pin; level from the PWM duty."""
        on = bool(self.feedback.value) if self.feedback is not None else bool(self.relay.value)
        level = round(self.dim.value * 100) if self.dim is not None else (100 if on else 0)
        return OutputState(on, level)

    def _close_all(self) -> None:
        for dev in (self.relay, self.dim, self.feedback):
            if dev is not None:
                dev.close()

    async def close(self) -> None:
        """Release the pins."""
        self._close_all()


class ModbusLightingOutput:
    """A Modbus lighting controller: ``relay_coil`` switches, ``dim_register`` holds 0-100 %.

    Talks through the shared Modbus driver via a :class:`~control.lighting.modbus_link.ModbusLink`.
    """

    def __init__(self, cfg: OutputConfig, link: ModbusLink) -> None:
        if cfg.type != "modbus" or cfg.relay_coil is None:
            raise ValueError("ModbusLightingOutput needs an output of type modbus")
        self.cfg = cfg
        self.relay_coil: int = cfg.relay_coil
        self.link = link

    async def apply(self, on: bool, level: int) -> None:
        """Write the level register, then the relay coil."""
        if self.cfg.dim_register is not None:
            await self.link.write_registers(self.cfg.dim_register, [max(0, min(100, level))])
        await self.link.write_coil(self.relay_coil, bool(on))

    async def read_back(self) -> OutputState:
        """Read the coil and the level register back from the controller."""
        on = bool((await self.link.read(1, self.relay_coil, 1))[0])
        if self.cfg.dim_register is None:
            return OutputState(on, 100 if on else 0)
        return OutputState(on, int((await self.link.read(3, self.cfg.dim_register, 1))[0]))

    async def close(self) -> None:
        """Close the link."""
        await self.link.close()


class BankLightingOutput:
    """Outputs ``relay`` and ``dim`` of a running ``gpio`` device (drivers/gpio), found by name in ``banks``.

    The bank is looked up on every call, so it may start after the lighting controller; until then
    the output reports a :class:`~kernel.errors.DeviceError` (an ``output_fault`` alarm) and is retried.
    At power-up the bank's own ``initial`` values apply: set them to the default light state.
    """

    def __init__(self, cfg: OutputConfig, banks: GpioBanks) -> None:
        if cfg.type != "gpio_bank" or cfg.device is None or cfg.relay is None:
            raise ValueError("BankLightingOutput needs an output of type gpio_bank")
        self.cfg = cfg
        self.banks = banks
        self.device: str = cfg.device
        self.relay: str = cfg.relay

    async def apply(self, on: bool, level: int) -> None:
        """Set the dim duty first, then the relay."""
        bank = self.banks.get(self.device)
        if self.cfg.dim is not None:
            bank.set_duty(self.cfg.dim, max(0, min(100, level)) / 100.0)
        bank.set_relay(self.relay, bool(on))

    async def read_back(self) -> OutputState:
        """The relay's auxiliary contact if wired, else the relay pin; the dim duty from its pin."""
        bank = self.banks.get(self.device)
        contact = bank.feedback(self.relay)
        on = contact if contact is not None else bank.read_back(self.relay) >= 0.5
        if self.cfg.dim is None:
            return OutputState(on, 100 if on else 0)
        return OutputState(on, round(bank.read_back(self.cfg.dim) * 100))

    async def close(self) -> None:
        """Nothing to release: the gpio device owns its pins."""
