"""The ``lighting`` section of the site config: circuits, groups, astro clock, sensor, profiles, calendar.

Names follow the TALQ 2.x data model where one exists (``AstroClockTimeControl``,
``AstroAndSensorActivePeriod``, ``CalendarRule``, ``defaultLightState``); see docs/lighting.md.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from control.config_base import NAME
from kernel.config_base import ModbusUnit, RelPath, StrictModel, TcpPort

LEGACY_STATE = Path("var/lighting-state.json")
"""The state file's default before it moved beside the store (relative to the config file's folder)."""

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)\Z")


def night_minute(hhmm: str) -> int:
    """Minutes since noon for a clock time, so that times of one night sort in order (noon to noon)."""
    m = _HHMM.match(hhmm)
    if not m:
        raise ValueError(f"{hhmm!r} is not a time like 22:30")
    minute = int(m.group(1)) * 60 + int(m.group(2))
    return (minute - 12 * 60) % (24 * 60)


class LightState(StrictModel):
    """A light state as a dim level in percent, 0 meaning off (TALQ ``defaultLightState``).

    A bare level rather than ``on: true``: YAML 1.1 reads an ``on`` key as the boolean True.
    """

    level: int = Field(default=100, ge=0, le=100)

    @property
    def on(self) -> bool:
        """Whether lamps are lit in this state."""
        return self.level > 0


class AstroTime(StrictModel):
    """One switching time as a solar event plus an offset (TALQ ``AstroClockTimeControl``)."""

    event: Literal["sunset", "dusk", "sunrise", "dawn"]
    offset_min: float = Field(
        default=0.0, ge=-180, le=180, description="Minutes after the event (negative: before)."
    )


class AstroConfig(StrictModel):
    """When lamps go on in the evening and off in the morning (``dusk``/``dawn``: civil twilight, -6 deg)."""

    switch_on: AstroTime = AstroTime(event="sunset")
    switch_off: AstroTime = AstroTime(event="sunrise")

    @field_validator("switch_on")
    @classmethod
    def _evening(cls, value: AstroTime) -> AstroTime:
        if value.event not in ("sunset", "dusk"):
            raise ValueError(f"switch_on must be an evening event (sunset or dusk), not {value.event!r}")
        return value

    @field_validator("switch_off")
    @classmethod
    def _morning(cls, value: AstroTime) -> AstroTime:
        if value.event not in ("sunrise", "dawn"):
            raise ValueError(f"switch_off must be a morning event (sunrise or dawn), not {value.event!r}")
        return value


class PhotocellConfig(StrictModel):
    """A photocell contact, trusted only inside a window around the astro times.

    TALQ ``AstroAndSensorActivePeriod``: the sensor may switch lamps on (evening) or off (morning)
    only within ``window_min`` minutes either side of the astro time; outside it the astro clock rules.
    ``type: gpio_photocell`` reads its own ``pin``; ``type: gpio_bank`` reads input ``input`` of the
    ``gpio`` device ``device`` (drivers/gpio), active meaning dark; ``type: modbus_lux`` reads a lux
    value from register ``lux_register`` of a Modbus TCP sensor at ``host`` once per control step: dark
    below ``on_lux``, light above ``off_lux`` (hysteresis in between).
    """

    type: Literal["gpio_photocell", "gpio_bank", "modbus_lux"] = "gpio_photocell"
    pin: int | None = Field(default=None, ge=0, le=27, description="gpio_photocell: BCM pin number.")
    device: str | None = Field(default=None, pattern=NAME, description="gpio_bank: the gpio device.")
    input: str | None = Field(default=None, pattern=NAME, description="gpio_bank: its photocell input.")
    dark_when: Literal["high", "low"] = "high"
    pull_up: bool = False
    window_min: float = Field(default=30.0, gt=0, le=180)
    debounce_s: float = Field(default=60.0, ge=0, le=3600)
    host: str | None = Field(default=None, description="modbus_lux: sensor or gateway address.")
    port: TcpPort = 502
    unit: ModbusUnit = 1
    lux_register: int | None = Field(
        default=None, ge=0, le=65535, description="modbus_lux: the lux register."
    )
    register_table: Literal["input_register", "holding_register"] = "input_register"
    data_type: Literal["uint16", "uint32", "float32"] = "uint16"
    scale: float = Field(default=1.0, gt=0, description="modbus_lux: lux = raw x scale.")
    on_lux: float = Field(default=30.0, ge=0, description="modbus_lux: dark below this.")
    off_lux: float = Field(default=60.0, ge=0, description="modbus_lux: light above this.")
    timeout_s: float = Field(default=1.0, gt=0, le=30)

    @model_validator(mode="after")
    def _source(self) -> PhotocellConfig:
        if self.type == "modbus_lux":
            if self.host is None or self.lux_register is None:
                raise ValueError(
                    f"{'host' if self.host is None else 'lux_register'}: required for type modbus_lux"
                )
            if self.off_lux <= self.on_lux:
                raise ValueError(f"off_lux: {self.off_lux} must be above on_lux ({self.on_lux})")
        if self.type == "gpio_photocell" and self.pin is None:
            raise ValueError("pin: required for type gpio_photocell")
        if self.type == "gpio_bank" and (self.device is None or self.input is None):
            raise ValueError(f"{'device' if self.device is None else 'input'}: required for type gpio_bank")
        return self


class ProfileStep(StrictModel):
    """From clock time ``at`` (local) on, the level is ``level`` percent (0 = off)."""

    at: str
    level: int = Field(ge=0, le=100)

    @field_validator("at", mode="before")
    @classmethod
    def _yaml_sexagesimal(cls, value: object) -> object:
        # YAML 1.1 (PyYAML) reads an unquoted 22:30 as the base-60 integer 1350.
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return f"{value // 60:02d}:{value % 60:02d}"
        return value

    @field_validator("at")
    @classmethod
    def _time(cls, value: str) -> str:
        night_minute(value)
        return value


class DimmingProfile(StrictModel):
    """A dimming profile through the night: ``start_level`` from switch-on, then steps in night order."""

    name: str = Field(pattern=NAME)
    start_level: int = Field(default=100, ge=0, le=100)
    steps: list[ProfileStep] = Field(default_factory=list)

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[ProfileStep]) -> list[ProfileStep]:
        prev = -1
        for i, step in enumerate(steps):
            minute = night_minute(step.at)
            if minute <= prev:
                raise ValueError(
                    f"[{i}].at: {step.at!r} is not after the previous step "
                    "(steps run from noon to noon, e.g. 22:00, 00:30, 04:45)"
                )
            prev = minute
        return steps


class GroupConfig(StrictModel):
    """A luminaire group: circuits that share a dimming profile and are commanded together."""

    name: str = Field(pattern=NAME)
    profile: str


class OutputConfig(StrictModel):
    """How a circuit is switched and dimmed.

    ``type: gpio``: a contactor relay on ``relay_pin``, optional PWM dimming (into a 0-10 V or DALI
    gateway input) on ``dim_pin`` and an optional contactor auxiliary contact on ``feedback_pin``.
    ``type: modbus``: a Modbus TCP lighting controller at ``host``; ``relay_coil`` switches the circuit
    and the holding register ``dim_register`` holds the level in percent. With ``heartbeat_register``
    the agent writes a counter there on every control step; a controller whose watchdog is set on
    that register falls back to its own default schedule when the agent goes silent.
    ``type: gpio_bank``: outputs ``relay`` (and ``dim``, a pwm output) of the ``gpio`` device ``device``
    (drivers/gpio), shared with whatever else that bank drives.
    """

    type: Literal["gpio", "modbus", "gpio_bank"]
    relay_pin: int | None = Field(default=None, ge=0, le=27, description="gpio: BCM pin of the relay.")
    relay_active_high: bool = True
    dim_pin: int | None = Field(default=None, ge=0, le=27)
    dim_active_high: bool = True
    pwm_frequency_hz: int = Field(default=200, ge=10, le=10_000)
    feedback_pin: int | None = Field(default=None, ge=0, le=27)
    host: str | None = Field(default=None, description="modbus: controller address.")
    port: TcpPort = 502
    unit: ModbusUnit = 1
    relay_coil: int | None = Field(default=None, ge=0, le=65535)
    dim_register: int | None = Field(default=None, ge=0, le=65535)
    heartbeat_register: int | None = Field(
        default=None, ge=0, le=65535, description="modbus: holding register the controller's watchdog watches."
    )
    timeout_s: float = Field(default=2.0, gt=0, le=30)
    device: str | None = Field(default=None, pattern=NAME, description="gpio_bank: the gpio device.")
    relay: str | None = Field(default=None, pattern=NAME, description="gpio_bank: its relay output.")
    dim: str | None = Field(default=None, pattern=NAME, description="gpio_bank: its pwm output.")

    @model_validator(mode="after")
    def _fields_of_type(self) -> OutputConfig:
        gpio_only = ("relay_pin", "dim_pin", "feedback_pin")
        modbus_only = ("host", "relay_coil", "dim_register", "heartbeat_register")
        bank_only = ("device", "relay", "dim")
        if self.type == "gpio_bank":
            missing = [f for f in ("device", "relay") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{missing[0]}: required for type gpio_bank")
            wrong = [f for f in gpio_only + modbus_only if getattr(self, f) is not None]
        elif self.type == "gpio":
            if self.relay_pin is None:
                raise ValueError("relay_pin: required for type gpio")
            wrong = [f for f in modbus_only + bank_only if getattr(self, f) is not None]
            seen: dict[int, str] = {}
            for name in gpio_only:
                pin = getattr(self, name)
                if pin is not None and pin in seen:
                    raise ValueError(f"{name}: pin {pin} is also this circuit's {seen[pin]}")
                if pin is not None:
                    seen[pin] = name
        else:
            missing = [f for f in ("host", "relay_coil") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{missing[0]}: required for type modbus")
            wrong = [f for f in gpio_only + bank_only if getattr(self, f) is not None]
        if wrong:
            raise ValueError(f"{wrong[0]}: does not apply to type {self.type}")
        return self


class MeterConfig(StrictModel):
    """The circuit's Eastron SDM energy meter on Modbus TCP (an RS-485 gateway or the meter itself)."""

    type: Literal["sdm120", "sdm630"]
    host: str
    port: TcpPort = 502
    unit: int = Field(default=1, ge=1, le=247)
    phase: Literal[1, 2, 3] = Field(default=1, description="SDM630 only: the phase that feeds the circuit.")
    timeout_s: float = Field(default=2.0, gt=0, le=30)


class CircuitConfig(StrictModel):
    """One switched (and optionally dimmed) lighting circuit with its lamps and meter."""

    name: str = Field(pattern=NAME)
    group: str
    output: OutputConfig
    meter: MeterConfig | None = None
    lamps: int = Field(ge=1, le=1000, description="Luminaires on the circuit.")
    lamp_watts: float = Field(gt=0, le=2000, description="Input power of one luminaire at 100 %.")
    lamp_min_watts: float = Field(
        default=0.0, ge=0, description="Input power of one luminaire at level 0 while on."
    )
    min_level: int = Field(
        default=10, ge=0, le=100, description="Lowest level the drivers accept; lower is raised."
    )
    power_factor: float = Field(default=0.95, gt=0.1, le=1.0)
    tolerance_pct: float = Field(
        default=15.0, gt=0, le=80, description="Allowed shortfall before a lamp failure."
    )
    off_current_a: float = Field(
        default=0.1, gt=0, le=100, description="Current above this while off is an alarm."
    )
    calibrate_samples: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Learn the circuit's measured/expected power ratio from this many settled samples (0: off).",
    )
    calibrated_tolerance_pct: float = Field(
        default=5.0,
        gt=0,
        le=80,
        description="Allowed shortfall once calibrated (below 100/lamps sees one lamp).",
    )
    settle_s: float = Field(
        default=120.0, ge=0, le=3600, description="Wait after switching before judging power."
    )

    @model_validator(mode="after")
    def _watts(self) -> CircuitConfig:
        if self.lamp_min_watts > self.lamp_watts:
            raise ValueError(
                f"lamp_min_watts ({self.lamp_min_watts}) must not exceed lamp_watts ({self.lamp_watts})"
            )
        return self


class CalendarRule(StrictModel):
    """Nights that use another profile (TALQ ``CalendarRule``).

    Anchor dates come from ``dates``, ``annual`` (MM-DD every year), ``lunar_new_year`` (Tết, mùng 1
    tháng Giêng) and ``public_holidays`` (Vietnam's official days off). Each anchor selects ``nights``
    nights starting ``day_offset`` days after it; a night runs from noon of its date to noon of the
    next, so ``day_offset: -1`` on Tết is the night of New Year's Eve (giao thừa).
    """

    name: str = Field(pattern=NAME)
    profile: str
    priority: int = Field(default=0, ge=0, le=100, description="Higher wins when rules overlap.")
    dates: list[dt.date] = Field(default_factory=list)
    annual: list[str] = Field(default_factory=list)
    lunar_new_year: bool = False
    public_holidays: bool = False
    day_offset: int = Field(default=0, ge=-31, le=31)
    nights: int = Field(default=1, ge=1, le=31)

    @field_validator("annual")
    @classmethod
    def _month_day(cls, values: list[str]) -> list[str]:
        for i, value in enumerate(values):
            try:
                dt.date.fromisoformat(f"2024-{value}")
            except ValueError as exc:
                raise ValueError(f"[{i}]: {value!r} is not a month-day like 09-02") from exc
        return values

    @model_validator(mode="after")
    def _some_anchor(self) -> CalendarRule:
        if not (self.dates or self.annual or self.lunar_new_year or self.public_holidays):
            raise ValueError("a calendar rule needs dates, annual, lunar_new_year or public_holidays")
        return self


class LightingConfig(StrictModel):
    """Street lighting at this site: run by the ``lighting`` device kind (see docs/lighting.md)."""

    astro: AstroConfig = AstroConfig()
    photocell: PhotocellConfig | None = None
    default_light_state: LightState = LightState()
    default_when_clock_unsynced: bool = Field(
        default=True,
        description="Use default_light_state while the wall clock is not trusted (no RTC, no NTP).",
    )
    profiles: list[DimmingProfile] = Field(min_length=1)
    groups: list[GroupConfig] = Field(min_length=1)
    circuits: list[CircuitConfig] = Field(min_length=1)
    calendar: list[CalendarRule] = Field(default_factory=list)
    state_path: RelPath | None = Field(
        default=None,
        validate_default=True,
        description="Where overrides, profile switches and calibration are kept across restarts (default: "
        "lighting-state.json beside the store, in the agent's state directory; a site that already has "
        "var/lighting-state.json beside its config file, the default before, keeps using it).",
    )
    max_override_s: float = Field(default=7 * 86400, gt=0, le=31 * 86400)
    tick_s: float = Field(default=5.0, ge=0.05, le=60)
    meter_period_s: float = Field(default=30.0, ge=0.1, le=3600)
    report_period_s: float = Field(default=300.0, ge=1, le=86400)

    @field_validator("state_path")
    @classmethod
    def _legacy_state(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            base = (info.context or {}).get("base_dir")
            legacy = Path(base) / LEGACY_STATE if base is not None else None
            if legacy is not None and legacy.exists():
                return legacy
        return value

    @model_validator(mode="after")
    def _references(self) -> LightingConfig:
        profiles = _unique("profiles", [p.name for p in self.profiles])
        groups = _unique("groups", [g.name for g in self.groups])
        _unique("circuits", [c.name for c in self.circuits])
        _unique("calendar", [r.name for r in self.calendar])
        for i, g in enumerate(self.groups):
            if g.profile not in profiles:
                raise ValueError(
                    f"groups[{i}].profile: {g.profile!r} is not a profile name {sorted(profiles)}"
                )
        for i, c in enumerate(self.circuits):
            if c.group not in groups:
                raise ValueError(f"circuits[{i}].group: {c.group!r} is not a group name {sorted(groups)}")
        for i, r in enumerate(self.calendar):
            if r.profile not in profiles:
                raise ValueError(
                    f"calendar[{i}].profile: {r.profile!r} is not a profile name {sorted(profiles)}"
                )
        pins: dict[int, str] = {}
        if self.photocell is not None and self.photocell.pin is not None:
            pins[self.photocell.pin] = "photocell.pin"
        for i, c in enumerate(self.circuits):
            if c.output.type == "gpio":
                for field in ("relay_pin", "dim_pin", "feedback_pin"):
                    pin = getattr(c.output, field)
                    if pin is None:
                        continue
                    here = f"circuits[{i}].output.{field}"
                    if pin in pins:
                        raise ValueError(f"{here}: pin {pin} is already used by {pins[pin]}")
                    pins[pin] = here
        return self

    def profile(self, name: str) -> DimmingProfile:
        """The profile called ``name``."""
        return next(p for p in self.profiles if p.name == name)

    def group(self, name: str) -> GroupConfig:
        """The group called ``name``."""
        return next(g for g in self.groups if g.name == name)


def _unique(what: str, names: list[str]) -> set[str]:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{what}[{i}].name: {name!r} is used twice")
        seen.add(name)
    return seen


def gpio_bank_problem(lighting: LightingConfig, devices: list[object]) -> str | None:
    """The first reference to a missing gpio device, output or input, as ``lighting.<path>: problem``."""
    banks = {getattr(d, "name", ""): d for d in devices if getattr(d, "driver", "") == "gpio"}

    def check(at: str, field: str, device: str | None, name: str | None, table: str, kind: str) -> str | None:
        if device not in banks:
            return f"lighting.{at}.device: {device!r} is not a gpio device of this site {sorted(banks)}"
        items = {o.name: o.kind for o in getattr(banks[device], table)}
        if name not in items:
            return f"lighting.{at}.{field}: {name!r} is not one of {device}'s {table} {sorted(items)}"
        if items[name] != kind:
            return f"lighting.{at}.{field}: {device}.{name} is a {items[name]} {table[:-1]}, not {kind}"
        return None

    for i, c in enumerate(lighting.circuits):
        o = c.output
        if o.type != "gpio_bank":
            continue
        at = f"circuits[{i}].output"
        problem = check(at, "relay", o.device, o.relay, "outputs", "relay")
        if problem is None and o.dim is not None:
            problem = check(at, "dim", o.device, o.dim, "outputs", "pwm")
        if problem:
            return problem
    pc = lighting.photocell
    if pc is not None and pc.type == "gpio_bank":
        return check("photocell", "input", pc.device, pc.input, "inputs", "photocell")
    return None
