"""The rig file: emulated devices on lines and pins, faults on a timeline, and what must hold.

A rig is one YAML file validated like the site config: a typo or a wrong value is reported with its
path (``faults[3].device: ...``) and the command exits 2. See ``docs/hil.md`` for the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from kernel.config_base import StrictModel, load_yaml, validation_problems
from kernel.errors import ConfigError
from kernel.kinds import KindRegistry

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


def kinds_of(context: Any) -> KindRegistry:
    """The kind registry a rig is validated with (``context={"kinds": ...}``), else the installed kinds."""
    kinds = (context or {}).get("kinds") if isinstance(context, dict) else None
    return kinds if isinstance(kinds, KindRegistry) else KindRegistry()

# -- lines ----------------------------------------------------------------------------------------


class RtuLine(StrictModel):
    """An RS-485 line, emulated by a pseudo-terminal pair (the agent opens the slave end)."""

    name: str = Field(pattern=NAME)
    type: Literal["rtu"]
    baudrate: int = Field(default=9600, ge=1200, le=115200)
    parity: Literal["N", "E", "O"] = "N"


class TcpGateway(StrictModel):
    """A Modbus TCP gateway on 127.0.0.1 (one server, the devices behind it by unit id)."""

    name: str = Field(pattern=NAME)
    type: Literal["tcp"]


Line = Annotated[Union[RtuLine, TcpGateway], Field(discriminator="type")]

# -- devices --------------------------------------------------------------------------------------

Range = tuple[float, float]


class DeviceBase(StrictModel):
    """What every emulated device has."""

    name: str = Field(pattern=NAME)
    min_per_minute: float | None = Field(
        default=None, ge=0, description="Overrides expect.min_per_minute for this device."
    )
    ranges: dict[str, Range] = Field(
        default_factory=dict, description="point -> [low, high]; overrides the profile's range."
    )


class ModbusDevice(DeviceBase):
    """A Modbus slave built from a device profile, on an RTU line or behind the TCP gateway."""

    kind: Literal["modbus"]
    profile: str = Field(min_length=1, description="Profile name (drivers/modbus/profiles).")
    line: str = Field(pattern=NAME)
    unit: int = Field(ge=1, le=247)
    poll_s: float = Field(default=1.0, gt=0, le=3600)


class SerialDevice(DeviceBase):
    """A streaming serial sensor on its own pseudo-terminal.

    ``sensor`` is a device kind whose registration has a stream emulator (``pms``, ``sds011``,
    ``nmea_gps`` and their rig names ``pms5003``, ``nmea``; any kind installed later too).
    """

    kind: Literal["serial"]
    sensor: str = Field(min_length=1, description="A device kind with a stream emulator (or its rig name).")
    baudrate: int | None = Field(default=None, description="Defaults to the sensor's own rate.")
    period_s: float = Field(default=1.0, ge=1.0, le=3600, description="How often the agent stores readings.")

    @field_validator("sensor")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        try:
            kinds_of(info.context).rig_kind(value, "stream")
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return value


class GpioOutput(StrictModel):
    """A relay or PWM dimming output."""

    name: str = Field(pattern=NAME)
    pin: int = Field(ge=0, le=53, description="BCM pin number.")
    kind: Literal["relay", "pwm"] = "relay"
    initial: float = Field(default=0.0, ge=0, le=1)


class GpioInput(StrictModel):
    """A contact input (door, photocell, button, vehicle loop)."""

    name: str = Field(pattern=NAME)
    pin: int = Field(ge=0, le=53, description="BCM pin number.")
    kind: Literal["door", "photocell", "button", "loop", "contact"] = "contact"


class GpioDevice(DeviceBase):
    """Relays, dimming outputs and contact inputs on gpiozero's MockFactory inside the agent.

    ``pins: mock``: the pins live in the agent's process and the rig checks that the bank reports its
    outputs' read-back and its inputs every ``period_s``. ``pins: rig``: the agent's factory is
    ``pin_factory: rig`` and the rig drives its inputs over a local socket (``gpio_input`` faults).
    """

    kind: Literal["gpio"]
    outputs: list[GpioOutput] = Field(default_factory=list)
    inputs: list[GpioInput] = Field(default_factory=list)
    period_s: float = Field(default=1.0, ge=0.5, le=3600)
    pins: Literal["mock", "rig"] = Field(default="mock", description="rig: the rig drives the inputs.")

    @model_validator(mode="after")
    def _some_pins(self) -> GpioDevice:
        if not self.outputs and not self.inputs:
            raise ValueError("a gpio device needs at least one output or input")
        return self


class SystemDevice(DeviceBase):
    """The board's own health source (needs no emulator)."""

    kind: Literal["system"]
    period_s: float = Field(default=1.0, ge=1.0)


Device = Annotated[Union[ModbusDevice, SerialDevice, GpioDevice, SystemDevice], Field(discriminator="kind")]

# -- faults ---------------------------------------------------------------------------------------

DEVICE_FAULTS = ("dead", "late", "crc", "garbage", "exception", "wrong_unit", "truncate", "reboot")
MODBUS_ONLY = {"late", "exception", "wrong_unit", "reboot"}
SERIAL_ONLY = {"truncate"}


class FaultBase(StrictModel):
    """When a fault starts and ends, in rig seconds from the start of the run."""

    at_s: float = Field(default=0.0, ge=0, description="Start, seconds after the run starts.")

    def start(self) -> float:
        """Start time in rig seconds."""
        return self.at_s

    def end(self, duration_s: float) -> float:
        """End time in rig seconds (instant faults end where they start)."""
        return self.at_s


class WindowFault(FaultBase):
    """A fault that lasts: ``until_s`` or ``for_s`` (neither: until the end of the run)."""

    until_s: float | None = Field(default=None, gt=0)
    for_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _window(self) -> WindowFault:
        if self.until_s is not None and self.for_s is not None:
            raise ValueError("give until_s or for_s, not both")
        if self.until_s is not None and self.until_s <= self.at_s:
            raise ValueError(f"until_s ({self.until_s}) must be after at_s ({self.at_s})")
        return self

    def end(self, duration_s: float) -> float:
        """End time in rig seconds."""
        if self.until_s is not None:
            return self.until_s
        if self.for_s is not None:
            return self.at_s + self.for_s
        return duration_s


class DeviceDead(WindowFault):
    """The device does not answer (Modbus) or falls silent (serial)."""

    kind: Literal["dead"]
    device: str


class RateFault(WindowFault):
    """A fault that hits a share of the frames."""

    device: str
    rate: float = Field(default=1.0, gt=0, le=1, description="Share of frames hit, 0..1.")


class Late(RateFault):
    """Answers arrive ``delay_s`` late (past the agent's timeout when large enough)."""

    kind: Literal["late"]
    delay_s: float = Field(default=2.0, gt=0, le=60)


class Crc(RateFault):
    """Bad CRC (Modbus) or bad checksum (serial frames)."""

    kind: Literal["crc"]


class Garbage(RateFault):
    """Random bytes instead of a frame."""

    kind: Literal["garbage"]


class Exception_(RateFault):
    """A Modbus exception answer with ``code``."""

    kind: Literal["exception"]
    code: int = Field(default=4, ge=1, le=11)


class WrongUnit(RateFault):
    """The answer carries another unit id."""

    kind: Literal["wrong_unit"]


class Truncate(RateFault):
    """Serial frames cut short."""

    kind: Literal["truncate"]


class Reboot(FaultBase):
    """The device reboots: silent for ``down_s``, then answers with its registers reset."""

    kind: Literal["reboot"]
    device: str
    down_s: float = Field(default=3.0, ge=0, le=600)

    def end(self, duration_s: float) -> float:
        """The device is back after ``down_s``."""
        return self.at_s + self.down_s


class TcpDrop(FaultBase):
    """The TCP gateway drops every connection at ``at_s`` (the agent must reconnect)."""

    kind: Literal["tcp_drop"]
    line: str


class Follow(StrictModel):
    """A reading that must reach the centre after an input changes (``value`` compared as stored)."""

    device: str = Field(pattern=NAME)
    point: str = Field(min_length=1)
    value: bool | float | str


class GpioInputSet(WindowFault):
    """The rig makes input ``input`` of a ``pins: rig`` gpio device active for the window, then inactive.

    ``follow``: readings that must be stored within ``within_s`` of the change (by default the
    input's own event). Inputs have the bank's default pull-up: active is the low level.
    """

    kind: Literal["gpio_input"]
    device: str
    input: str = Field(pattern=NAME)
    within_s: float = Field(default=5.0, gt=0, le=600)
    follow: list[Follow] = Field(default_factory=list)


class BrokerDown(WindowFault):
    """The MQTT broker is stopped for the window, then started again on the same port."""

    kind: Literal["broker_down"]


class AgentKill(FaultBase):
    """The agent is killed with SIGKILL at ``at_s`` and started again ``down_s`` later."""

    kind: Literal["agent_kill"]
    down_s: float = Field(default=1.0, ge=0, le=600)

    def end(self, duration_s: float) -> float:
        """The agent is started again after ``down_s``."""
        return self.at_s + self.down_s


class ReceiverRestart(FaultBase):
    """The reference receiver is stopped (``signal``) at ``at_s`` and started ``down_s`` later."""

    kind: Literal["receiver_restart"]
    down_s: float = Field(default=1.0, ge=0, le=600)
    signal: Literal["SIGTERM", "SIGKILL"] = "SIGTERM"

    def end(self, duration_s: float) -> float:
        """The receiver is started again after ``down_s``."""
        return self.at_s + self.down_s


Fault = Annotated[
    Union[
        DeviceDead,
        Late,
        Crc,
        Garbage,
        Exception_,
        WrongUnit,
        Truncate,
        Reboot,
        TcpDrop,
        BrokerDown,
        AgentKill,
        ReceiverRestart,
        GpioInputSet,
    ],
    Field(discriminator="kind"),
]
FAULT_KINDS = (
    "dead",
    "late",
    "crc",
    "garbage",
    "exception",
    "wrong_unit",
    "truncate",
    "reboot",
    "tcp_drop",
    "broker_down",
    "agent_kill",
    "receiver_restart",
    "gpio_input",
)

# -- the rest -------------------------------------------------------------------------------------


class Expectations(StrictModel):
    """What must hold at the end of the run, checked against what the receiver stored."""

    no_loss: bool = Field(
        default=True, description="Every seq the agent's store accepted reached the receiver."
    )
    no_duplicates: bool = Field(default=True, description="No reading stored twice under different seqs.")
    recovery_s: float | None = Field(
        default=30.0,
        gt=0,
        description="Every device reports again within this many seconds after a fault ends.",
    )
    values_in_range: bool = True
    min_per_minute: float | None = Field(
        default=None, ge=0, description="Readings per device per minute of fault-free time, at least."
    )
    drain_timeout_s: float = Field(default=60.0, gt=0, description="How long the final drain may take.")
    backlog_delivered_s: float | None = Field(
        default=None,
        gt=0,
        description="After each broker outage ends, what was stored during it reaches the receiver within this.",
    )


class AgentSettings(StrictModel):
    """Uplink settings of the generated site config, tuned so a rig's faults resolve quickly."""

    ack_timeout_s: float = Field(default=5.0, gt=0)
    batch_max_age_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=2.0, gt=0)
    response_timeout_s: float = Field(default=0.5, gt=0, description="Modbus answer timeout.")
    device_backoff_max_s: float = Field(
        default=2.0, gt=0, description="Longest wait before retrying a dead device."
    )
    serial_silence_s: float = Field(
        default=3.0, ge=0.5, description="No frame for this long: sensor offline."
    )


class ReceiverSettings(StrictModel):
    """The reference receiver's database."""

    db: Literal["sqlite", "postgres"] = "sqlite"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"


class RigLighting(StrictModel):
    """A street-lighting controller on a gpio device of the rig (one circuit, photocell from the bank).

    The rig places the site where the sun sets ``sunset_after_s`` after the agent starts, so the
    photocell's evening window (``window_min`` either side of sunset) is open while the rig runs.
    """

    name: str = Field(default="street-lights", pattern=NAME)
    gpio: str = Field(pattern=NAME, description="The rig's gpio device that carries the circuit.")
    relay: str = Field(pattern=NAME, description="Its relay output switching the circuit.")
    dim: str | None = Field(default=None, pattern=NAME, description="Its pwm output dimming the circuit.")
    photocell: str = Field(pattern=NAME, description="Its photocell input.")
    sunset_after_s: float = Field(default=300.0, ge=0, le=3600)
    window_min: float = Field(default=30.0, gt=0, le=180)


class Rig(StrictModel):
    """One HIL rig."""

    version: Literal[1] = 1
    rig: str = Field(pattern=NAME, description="Rig name; also the site id (prefixed hil-).")
    description: str = ""
    duration_s: float = Field(gt=0, le=7 * 86400)
    lines: list[Line] = Field(default_factory=list)
    devices: list[Device] = Field(min_length=1)
    faults: list[Fault] = Field(default_factory=list)
    expect: Expectations = Expectations()
    agent: AgentSettings = AgentSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    lighting: RigLighting | None = None

    @model_validator(mode="after")
    def _references(self) -> Rig:
        problems: list[str] = []
        names = [ln.name for ln in self.lines]
        lines = {ln.name: ln for ln in self.lines}
        for i, n in enumerate(names):
            if n in names[:i]:
                problems.append(f"lines[{i}].name: {n!r} is used by another line")
        devs: dict[str, Any] = {}
        units: dict[tuple[str, int], str] = {}
        pins: dict[int, str] = {}
        for i, d in enumerate(self.devices):
            if d.name in devs:
                problems.append(f"devices[{i}].name: {d.name!r} is used by another device")
            devs[d.name] = d
            if isinstance(d, ModbusDevice):
                problem = _profile_problem(d.profile)
                if problem:
                    problems.append(f"devices[{i}].profile: {problem}")
                if d.line not in lines:
                    problems.append(
                        f"devices[{i}].line: no line named {d.line!r} (lines: {', '.join(names) or 'none'})"
                    )
                elif (d.line, d.unit) in units:
                    problems.append(
                        f"devices[{i}].unit: unit {d.unit} on {d.line!r} is taken by {units[(d.line, d.unit)]!r}"
                    )
                units.setdefault((d.line, d.unit), d.name)
            if isinstance(d, GpioDevice):
                named = [(f"outputs[{j}]", o.name, o.pin) for j, o in enumerate(d.outputs)]
                named += [(f"inputs[{j}]", n.name, n.pin) for j, n in enumerate(d.inputs)]
                for where, point, pin in named:
                    if pin in pins:
                        problems.append(f"devices[{i}].{where}.pin: pin {pin} is used by {pins[pin]!r}")
                    pins[pin] = f"{d.name}.{point}"
        for i, f in enumerate(self.faults):
            where = f"faults[{i}]"
            if f.at_s >= self.duration_s:
                problems.append(
                    f"{where}.at_s: {f.at_s} is not before the end of the run ({self.duration_s} s)"
                )
            if f.end(self.duration_s) > self.duration_s:
                problems.append(
                    f"{where}: ends at {f.end(self.duration_s)} s, after the run ({self.duration_s} s)"
                )
            device = getattr(f, "device", None)
            if device is not None:
                target = devs.get(device)
                if target is None:
                    problems.append(f"{where}.device: no device named {device!r}")
                elif isinstance(f, GpioInputSet):
                    problems += _gpio_input_problems(where, f, target)
                elif isinstance(target, (GpioDevice, SystemDevice)):
                    problems.append(
                        f"{where}.kind: {f.kind!r} cannot be injected into {target.kind} device {device!r}"
                    )
                elif isinstance(target, SerialDevice) and f.kind in MODBUS_ONLY:
                    problems.append(
                        f"{where}.kind: {f.kind!r} applies to Modbus devices, {device!r} is serial"
                    )
                elif isinstance(target, ModbusDevice) and f.kind in SERIAL_ONLY:
                    problems.append(
                        f"{where}.kind: {f.kind!r} applies to serial sensors, {device!r} is Modbus"
                    )
            if isinstance(f, TcpDrop) and not isinstance(lines.get(f.line), TcpGateway):
                problems.append(f"{where}.line: {f.line!r} is not a tcp line of this rig")
        if self.lighting is not None:
            problems += _lighting_problems(self.lighting, devs.get(self.lighting.gpio))
        if problems:
            raise ValueError("; ".join(problems))  # validation_problems splits them back, path by path
        return self

    @property
    def site_id(self) -> str:
        """The site id of the generated site config."""
        return f"hil-{self.rig}"[:63]

    def device(self, name: str) -> Any:
        """The device named ``name``."""
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    def scaled(self, speed: float) -> Rig:
        """The same rig with its timeline (duration and fault times) divided by ``speed``.

        Device periods, timeouts and the recovery allowance stay in real seconds: they belong to
        the devices and the agent, not to the scenario.
        """
        if speed == 1:
            return self
        faults = []
        for f in self.faults:
            times = {k: getattr(f, k) for k in ("at_s", "until_s", "for_s", "down_s") if hasattr(f, k)}
            faults.append(f.model_copy(update={k: v / speed for k, v in times.items() if v is not None}))
        # Dividing every time by the same factor keeps the validated order; nothing to check again.
        return self.model_copy(update={"duration_s": self.duration_s / speed, "faults": faults})


def _gpio_input_problems(where: str, f: GpioInputSet, target: Any) -> list[str]:
    if not isinstance(target, GpioDevice):
        return [f"{where}.device: {f.device!r} is not a gpio device"]
    if target.pins != "rig":
        return [f"{where}.device: {f.device!r} has pins: mock; the rig can drive inputs only with pins: rig"]
    names = [i.name for i in target.inputs]
    if f.input not in names:
        return [f"{where}.input: {f.device!r} has no input {f.input!r} (inputs: {', '.join(names) or 'none'})"]
    return []


def _lighting_problems(lt: RigLighting, dev: Any) -> list[str]:
    if not isinstance(dev, GpioDevice):
        return [f"lighting.gpio: no gpio device named {lt.gpio!r}"]
    out = []
    outputs = {o.name: o.kind for o in dev.outputs}
    if outputs.get(lt.relay) != "relay":
        out.append(f"lighting.relay: {lt.gpio!r} has no relay output {lt.relay!r}")
    if lt.dim is not None and outputs.get(lt.dim) != "pwm":
        out.append(f"lighting.dim: {lt.gpio!r} has no pwm output {lt.dim!r}")
    if lt.photocell not in {i.name for i in dev.inputs if i.kind == "photocell"}:
        out.append(f"lighting.photocell: {lt.gpio!r} has no photocell input {lt.photocell!r}")
    return out


def _profile_problem(ref: str) -> str | None:
    """Why a Modbus profile cannot be used, or None when it loads."""
    from drivers.modbus.kind import cached_profile

    try:
        cached_profile(ref)
    except ConfigError as exc:
        return f"{ref!r}: {' / '.join(exc.problems[:3])}"
    return None


# The discriminator values of the rig's unions, left out of error paths (``faults[3].device``).
UNION_TAGS = frozenset((*FAULT_KINDS, "modbus", "serial", "gpio", "system", "rtu", "tcp"))


def parse_rig(data: Any, source: str = "<rig>", kinds: KindRegistry | None = None) -> Rig:
    """Validate already-parsed YAML; raise :class:`ConfigError` listing every problem.

    ``kinds``: the device kinds serial sensors are looked up in (default: the installed ones).
    """
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): a rig file is a mapping with rig, duration_s and devices"])
    try:
        return Rig.model_validate(data, context={"kinds": kinds if kinds is not None else KindRegistry()})
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc, UNION_TAGS)) from exc


def load_rig(path: Path | str, kinds: KindRegistry | None = None) -> Rig:
    """Read and validate a rig file."""
    path = Path(path)
    return parse_rig(load_yaml(path), str(path), kinds)
