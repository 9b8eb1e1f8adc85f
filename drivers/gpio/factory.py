"""Choosing the gpiozero pin factory: named in the config, or by environment, never set globally.

Every gpiozero device the agent creates gets ``pin_factory=`` explicitly, so two banks (or a test
and a rig) never share hidden state through ``gpiozero.Device.pin_factory``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Literal

from kernel.errors import DeviceError

FactoryName = Literal["auto", "mock", "rig", "lgpio", "rpigpio", "pigpio", "native"]

ENV_VAR = "KBE_GPIO_PIN_FACTORY"

# Real-pin factories in the order gpiozero itself tries them (gpiozero docs, "Changing the pin
# factory": lgpio, rpigpio, pigpio, native).
_REAL: dict[str, tuple[str, str]] = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}


def mock_factory() -> Any:
    """A fresh gpiozero MockFactory whose pins can do PWM (tests, HIL rigs, laptops)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    return MockFactory(pin_class=MockPWMPin)


def _real(name: str) -> Any:
    module, cls = _REAL[name]
    try:
        return getattr(importlib.import_module(module), cls)()
    except Exception as exc:
        raise DeviceError(f"gpio pin factory {name!r} is not usable here: {exc}") from exc


def make_pin_factory(name: FactoryName = "auto") -> Any:
    """Build the pin factory ``name``; ``auto`` reads ``KBE_GPIO_PIN_FACTORY`` then tries real pins.

    :raises DeviceError: when the named factory (or, for ``auto``, every real one) cannot start.
    """
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            if env not in ("mock", "rig") and env not in _REAL:
                raise DeviceError(f"{ENV_VAR}={env!r}: expected mock, rig, {', '.join(_REAL)}")
            name = env  # type: ignore[assignment]
    if name == "mock":
        return mock_factory()
    if name == "rig":
        # Mock pins whose inputs a HIL rig in another process drives (drivers/gpio/rigpins.py).
        from drivers.gpio.rigpins import rig_pin_factory

        return rig_pin_factory()
    if name != "auto":
        return _real(name)
    problems: list[str] = []
    for candidate in _REAL:
        try:
            return _real(candidate)
        except DeviceError as exc:
            problems.append(str(exc))
    raise DeviceError("no gpio pin factory works on this board: " + "; ".join(problems))


class PinFactories:
    """The pin-factory service of a run context: which gpiozero factory a device's pins use.

    ``auto`` resolves to the ``provided`` factory when the run was given one (a test's or a rig's
    mock pins, shared by every device of the run), else as :func:`make_pin_factory`. A named factory
    is always built as named. gpiozero's process-wide ``Device.pin_factory`` is never read or set.
    """

    def __init__(self, provided: Any | None = None) -> None:
        self.provided = provided

    def get(self, name: FactoryName = "auto") -> Any:
        """The factory for a device whose config says ``pin_factory: name``."""
        if name == "auto" and self.provided is not None:
            return self.provided
        return make_pin_factory(name)
