"""The photocell (or lux) sensor and the window around the astro times in which it may switch.

TALQ ``AstroAndSensorActivePeriod``: in the evening the lamps go on when the sensor reports dark
inside ``[on - window, on + window)``, and at ``on + window`` at the latest; in the morning they go
off when it reports light inside ``[off - window, off + window)``, and at ``off + window`` at the
latest. Outside the windows the astro clock alone decides, so a covered or broken sensor cannot keep
lamps on by day or off by night. Once the sensor has acted in a window, the decision holds for that
window (no flicker on a passing cloud or headlights).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Protocol

from gpiozero import DigitalInputDevice

from control.lighting.astro import NightTimes
from control.lighting.config import PhotocellConfig
from control.lighting.modbus_link import ModbusLink
from drivers.gpio.registry import GpioBanks
from drivers.modbus.codec import decode_raw, register_count
from kernel.errors import AgentError, DeviceError

log = logging.getLogger("kbe.lighting")


class LightSensor(Protocol):
    """Something that tells whether it is dark outside (None when it cannot tell)."""

    async def refresh(self) -> None:
        """Fetch a fresh value if the sensor needs I/O (called once per control step)."""
        ...

    def is_dark(self) -> bool | None:
        """True when dark, False when light, None when unknown."""
        ...

    async def close(self) -> None:
        """Release the sensor."""
        ...


class GpioPhotocell:
    """A photocell's relay contact on a GPIO input."""

    def __init__(self, cfg: PhotocellConfig, pin_factory: Any = None) -> None:
        if cfg.pin is None:
            raise ValueError("GpioPhotocell needs a pin")
        self.cfg = cfg
        self.input = DigitalInputDevice(cfg.pin, pull_up=cfg.pull_up, pin_factory=pin_factory)

    async def refresh(self) -> None:
        """Nothing to fetch: the pin is read directly."""

    def is_dark(self) -> bool | None:
        """The contact state read as dark or light."""
        high = bool(self.input.value) if not self.cfg.pull_up else not bool(self.input.value)
        return high if self.cfg.dark_when == "high" else not high

    async def close(self) -> None:
        """Release the pin."""
        self.input.close()


class BankPhotocell:
    """A photocell input of a running ``gpio`` device (drivers/gpio); active means dark."""

    def __init__(self, cfg: PhotocellConfig, banks: GpioBanks) -> None:
        if cfg.device is None or cfg.input is None:
            raise ValueError("BankPhotocell needs device and input")
        self.banks = banks
        self.device: str = cfg.device
        self.input: str = cfg.input

    async def refresh(self) -> None:
        """Nothing to fetch: the bank reads its pin."""

    def is_dark(self) -> bool | None:
        """The input's state; None while the gpio device is not running."""
        try:
            return self.banks.get(self.device).input_state(self.input)
        except DeviceError:
            return None

    async def close(self) -> None:
        """Nothing to release: the gpio device owns its pins."""


class LuxThreshold:
    """Lux to dark or light with hysteresis: dark below ``on_lux``, light above ``off_lux``."""

    def __init__(self, read_lux: Any, on_lux: float, off_lux: float) -> None:
        if off_lux <= on_lux:
            raise ValueError(f"off_lux ({off_lux}) must be above on_lux ({on_lux})")
        self.read_lux = read_lux
        self.on_lux = on_lux
        self.off_lux = off_lux
        self._dark: bool | None = None

    def is_dark(self) -> bool | None:
        """Dark or light from the latest lux value; None when there is no value."""
        lux = self.read_lux()
        if lux is None:
            return None
        if lux < self.on_lux:
            self._dark = True
        elif lux > self.off_lux:
            self._dark = False
        elif self._dark is None:
            self._dark = lux < (self.on_lux + self.off_lux) / 2
        return self._dark

    async def refresh(self) -> None:
        """Nothing to fetch: ``read_lux`` is called by :meth:`is_dark`."""

    async def close(self) -> None:
        """Nothing to release."""


class ModbusLuxSensor:
    """A lux sensor on Modbus (through the shared driver), read once per control step."""

    def __init__(self, cfg: PhotocellConfig, link: ModbusLink) -> None:
        if cfg.lux_register is None:
            raise ValueError("ModbusLuxSensor needs a lux_register")
        self.cfg = cfg
        self.register: int = cfg.lux_register
        self.link = link
        self.lux: float | None = None
        self.threshold = LuxThreshold(lambda: self.lux, cfg.on_lux, cfg.off_lux)

    async def refresh(self) -> None:
        """Read the lux register; on any device error the value is unknown (the astro time rules)."""
        fc = 4 if self.cfg.register_table == "input_register" else 3
        try:
            regs = await self.link.read(fc, self.register, register_count(self.cfg.data_type))
            raw = decode_raw([int(r) for r in regs], self.cfg.data_type)
            self.lux = float(raw) * self.cfg.scale
        except AgentError as exc:
            log.warning("lux sensor %s:%s unreadable: %s", self.cfg.host, self.cfg.port, exc)
            self.lux = None

    def is_dark(self) -> bool | None:
        """Dark or light with hysteresis; None while the sensor does not answer."""
        return self.threshold.is_dark()

    async def close(self) -> None:
        """Close the link."""
        await self.link.close()


class Debounce:
    """A sensor value counts only once it has held for ``hold_s`` (monotonic seconds)."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._raw: bool | None = None
        self._since = 0.0
        self.value: bool | None = None

    def update(self, raw: bool | None, mono: float) -> bool | None:
        """Feed a raw value; return the debounced one (None until a value has held)."""
        if raw is None:
            self._raw = None
            self.value = None
            return None
        if raw != self._raw:
            self._raw = raw
            self._since = mono
        if mono - self._since >= self.hold_s:
            self.value = raw
        return self.value


class SensorWindow:
    """Decides lit or not for a night from its astro times and the debounced sensor."""

    def __init__(self, window_min: float) -> None:
        self.window = dt.timedelta(minutes=window_min)
        self._evening: dict[dt.date, bool] = {}
        self._morning: dict[dt.date, bool] = {}

    def lit(self, local: dt.datetime, times: NightTimes, dark: bool | None) -> bool:
        """Whether lamps are lit at ``local`` in night ``times`` given the sensor's ``dark``."""
        for store in (self._evening, self._morning):
            for night in [n for n in store if n < times.night - dt.timedelta(days=2)]:
                del store[night]
        if local < times.on - self.window:
            return False
        if local < times.on + self.window:
            if dark is True:
                self._evening[times.night] = True
            return self._evening.get(times.night, False) or (dark is None and local >= times.on)
        if local < times.off - self.window:
            return True
        if local < times.off + self.window:
            if dark is False:
                self._morning[times.night] = True
            return not (self._morning.get(times.night, False) or (dark is None and local >= times.off))
        return False
