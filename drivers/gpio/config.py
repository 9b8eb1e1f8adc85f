"""Configuration of a GPIO bank: outputs (relay, PWM) and inputs (door, photocell, button, loop)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from drivers.gpio.factory import FactoryName
from kernel.config_base import StrictModel

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
Pin = int | str  # BCM number (17) or a gpiozero pin name ("GPIO17", "BOARD11")


class OutputConfig(StrictModel):
    """One output: a relay (on/off) or a PWM dimming channel (duty 0..1)."""

    name: str = Field(pattern=NAME)
    pin: Pin
    kind: Literal["relay", "pwm"] = "relay"
    active_high: bool = True
    initial: float = Field(default=0.0, ge=0.0, le=1.0, description="State at start: 0/1, or a duty for pwm.")
    frequency_hz: int = Field(default=200, ge=1, le=40_000, description="PWM frequency (pwm only).")
    feedback_pin: Pin | None = Field(
        default=None, description="Input wired to the relay's auxiliary contact, checked against the command."
    )

    @model_validator(mode="after")
    def _relay_initial(self) -> OutputConfig:
        if self.kind == "relay" and self.initial not in (0.0, 1.0):
            raise ValueError(f"initial: a relay starts at 0 or 1, not {self.initial}")
        if self.kind == "pwm" and self.feedback_pin is not None:
            raise ValueError("feedback_pin: only relays have an auxiliary contact")
        return self


class InputConfig(StrictModel):
    """One contact input. ``active`` is what the contact means when it reads active."""

    name: str = Field(pattern=NAME)
    pin: Pin
    kind: Literal["door", "photocell", "button", "loop", "contact"] = "contact"
    pull_up: bool = Field(default=True, description="Internal pull-up (contact to ground), else pull-down.")
    bounce_s: float | None = Field(default=0.02, ge=0.0, le=5.0)
    active_value: str = Field(default="", description="Text of the active state; defaults per kind.")
    inactive_value: str = Field(default="", description="Text of the inactive state; defaults per kind.")


DEFAULT_STATES: dict[str, tuple[str, str]] = {
    "door": ("open", "closed"),
    "photocell": ("dark", "light"),
    "button": ("pressed", "released"),
    "loop": ("occupied", "free"),
    "contact": ("on", "off"),
}


class GpioConfig(StrictModel):
    """A bank of pins on one board."""

    pin_factory: FactoryName = Field(
        default="auto",
        description="auto: $KBE_GPIO_PIN_FACTORY, else the first real backend that works; mock: pins in "
        "this process; rig: mock pins a HIL rig drives over the socket $KBE_GPIO_RIG_SOCKET.",
    )
    outputs: list[OutputConfig] = Field(default_factory=list)
    inputs: list[InputConfig] = Field(default_factory=list)
    report_period_s: float = Field(default=60.0, ge=0.5, le=86400)
    event_queue: int = Field(default=1000, ge=10, le=100_000, description="Input events waiting, at most.")

    @model_validator(mode="after")
    def _unique(self) -> GpioConfig:
        names: set[str] = set()
        pins: set[str] = set()
        items: list[tuple[str, str, list[Pin]]] = [
            (f"outputs[{i}]", o.name, [o.pin] if o.feedback_pin is None else [o.pin, o.feedback_pin])
            for i, o in enumerate(self.outputs)
        ]
        items += [(f"inputs[{i}]", n.name, [n.pin]) for i, n in enumerate(self.inputs)]
        for where, name, used in items:
            if name in names:
                raise ValueError(f"{where}.name: {name!r} is used twice")
            names.add(name)
            for pin in used:
                key = str(pin).upper().removeprefix("GPIO")
                if key in pins:
                    raise ValueError(f"{where}.pin: {pin!r} is used twice")
                pins.add(key)
        return self
