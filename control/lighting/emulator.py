"""Emulators for lighting tests and HIL benches, built on the Modbus driver's emulator
(drivers/modbus/emulator.py: profile-driven devices, faults on demand, a Modbus TCP front end).

- :class:`SdmEmulator`: an Eastron SDM120 (or SDM630 phase) from the driver's shipped profile, whose
  voltage, current, power and energy follow a :class:`LampBank` instead of random motion;
- :class:`LampBank`: the lamps of one circuit as a load that follows the circuit's real output
  (relay and PWM pins, or an emulated controller) and can be given failed lamps or a welded contactor;
- :class:`LightingControllerEmulator`: a Modbus lighting controller (relay coil, level register,
  and optionally a heartbeat register with a watchdog: when the agent stops writing it, the
  controller falls back to its own default schedule, as a real one does).
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field

from control.lighting.config import MeterConfig
from control.lighting.meter import meter_points
from control.lighting.outputs import OutputState
from drivers.modbus.emulator import EmulatedDevice, TcpServer
from drivers.modbus.profile import Point, Profile


@dataclass
class LampBank:
    """The lamps of one circuit as a load: power follows the output state, minus failed lamps.

    ``efficiency`` scales the drawn power (real drivers draw a few percent off their rating).
    """

    state: Callable[[], OutputState]
    lamps: int
    lamp_watts: float
    lamp_min_watts: float = 0.0
    min_level: int = 10
    power_factor: float = 0.95
    voltage: float = 230.0
    efficiency: float = 0.97
    failed: int = 0
    stuck_on: bool = False
    energy_kwh: float = 0.0
    _last: float = field(default_factory=time.monotonic)

    def power(self) -> float:
        """Active power drawn now (W)."""
        st = self.state()
        if not (st.on or self.stuck_on):
            return 0.0
        level = st.level if st.on else 100
        eff = max(level, self.min_level) if level > 0 else 0
        per_lamp = self.lamp_min_watts + (self.lamp_watts - self.lamp_min_watts) * eff / 100.0
        return max(0, self.lamps - self.failed) * per_lamp * self.efficiency

    def sample(self) -> tuple[float, float, float, float]:
        """Voltage, current, power and the energy counter, integrating energy since the last sample."""
        now = time.monotonic()
        p = self.power()
        self.energy_kwh += p * (now - self._last) / 3_600_000.0
        self._last = now
        return self.voltage, p / (self.voltage * self.power_factor), p, self.energy_kwh


class _LoadMeter(EmulatedDevice):
    """An SDM profile device whose four circuit values come from a lamp bank on every read."""

    def __init__(self, profile: Profile, names: list[str], bank: LampBank, unit: int) -> None:
        self.bank: LampBank | None = None
        self.names = names
        super().__init__(profile, unit)
        self.bank = bank

    def update(self, force: bool = False) -> None:
        """Move the other points as usual; set voltage, current, power and energy from the load."""
        super().update(force)
        if self.bank is not None:
            for name, value in zip(self.names, self.bank.sample(), strict=True):
                self._store(self.profile.point(name), value)


class _Server:
    def __init__(self, device: EmulatedDevice) -> None:
        self.device = device
        self.server: TcpServer | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``."""
        self.server = TcpServer([self.device], host, port)
        await self.server.start()

    async def stop(self) -> None:
        """Stop listening and drop connections."""
        if self.server is not None:
            await self.server.stop()
            self.server = None


class SdmEmulator(_Server):
    """An SDM120 (or one phase of an SDM630) on Modbus TCP, measuring a :class:`LampBank`."""

    def __init__(self, bank: LampBank, unit: int = 1, model: str = "sdm120", phase: int = 1) -> None:
        cfg = MeterConfig.model_validate({"type": model, "host": "emulator", "unit": unit, "phase": phase})
        profile, names = meter_points(cfg)
        self.bank = bank
        super().__init__(_LoadMeter(profile, names, bank, unit))

    @property
    def reads(self) -> int:
        """Requests served so far."""
        return self.device.requests


@dataclass(frozen=True)
class DefaultSchedule:
    """The controller's own timer, used while the agent is silent: on (at ``level``) from ``on`` to
    ``off`` local time (through midnight when ``on`` > ``off``)."""

    on: dt.time = dt.time(18, 0)
    off: dt.time = dt.time(6, 0)
    level: int = 100
    timezone: str = "Asia/Ho_Chi_Minh"

    def state(self, wall: float) -> OutputState:
        """What the timer shows at wall-clock time ``wall``."""
        t = dt.datetime.fromtimestamp(wall, zoneinfo.ZoneInfo(self.timezone)).time()
        lit = (self.on <= t < self.off) if self.on <= self.off else (t >= self.on or t < self.off)
        return OutputState(lit, self.level if lit else 0)


class _Controller(EmulatedDevice):
    def __init__(self, profile: Profile, unit: int) -> None:
        super().__init__(profile, unit)
        self.writes = 0
        self.before: Callable[[bytes], None] = lambda pdu: None

    def handle(self, pdu: bytes) -> bytes:
        if pdu and pdu[0] in (5, 6, 15, 16):
            self.writes += 1
        self.before(pdu)
        return super().handle(pdu)


class LightingControllerEmulator(_Server):
    """A Modbus lighting controller: a writable relay coil and a writable level register (0-100).

    With ``heartbeat_register`` and ``watchdog_s``, the holding register is the agent's heartbeat:
    when no write reaches it for ``watchdog_s`` (or none since power-up), the controller runs its
    :class:`DefaultSchedule` instead of the last commanded state, until the next heartbeat.
    """

    def __init__(
        self,
        unit: int = 1,
        relay_coil: int = 0,
        dim_register: int = 1,
        initial: OutputState | None = None,
        heartbeat_register: int | None = None,
        watchdog_s: float | None = None,
        schedule: DefaultSchedule | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        points = [
            Point(name="relay", table="coil", address=relay_coil, type="bool", writable=True),
            Point(name="level", table="holding_register", address=dim_register, writable=True, min=0, max=100),
        ]
        if heartbeat_register is not None:
            points.append(
                Point(name="heartbeat", table="holding_register", address=heartbeat_register, writable=True)
            )
        profile = Profile(model="lighting-controller", points=points)
        self.relay_coil = relay_coil
        self.dim_register = dim_register
        self.heartbeat_register = heartbeat_register
        self.watchdog_s = watchdog_s if heartbeat_register is not None else None
        self.schedule = schedule or DefaultSchedule()
        self.clock, self.wall = clock, wall
        self.last_heartbeat = clock()
        self.heartbeats = 0
        self.fallbacks = 0
        self.on_schedule = False
        self.ctl = _Controller(profile, unit)
        self.ctl.before = self._before
        super().__init__(self.ctl)
        if initial is not None:
            self.force(initial)

    def _before(self, pdu: bytes) -> None:
        """Every request: a heartbeat write ends the fallback; otherwise the watchdog is checked."""
        if self.heartbeat_register is not None and pdu[:1] in (b"\x06", b"\x10"):
            address = int.from_bytes(pdu[1:3], "big")
            count = 1 if pdu[0] == 6 else int.from_bytes(pdu[3:5], "big")
            if address <= self.heartbeat_register < address + count:
                self.last_heartbeat = self.clock()
                self.heartbeats += 1
                self.on_schedule = False
        self.poll()

    def poll(self) -> None:
        """The watchdog: with no heartbeat for ``watchdog_s``, the outputs follow the default schedule."""
        if self.watchdog_s is None:
            return
        if self.clock() - self.last_heartbeat > self.watchdog_s:
            if not self.on_schedule:
                self.fallbacks += 1
            self.on_schedule = True
            self.force(self.schedule.state(self.wall()))

    @property
    def writes(self) -> int:
        """Write requests served so far."""
        return self.ctl.writes

    def state(self) -> OutputState:
        """What the controller's outputs show (for a :class:`LampBank`)."""
        self.poll()
        tables = self.ctl.tables
        return OutputState(
            bool(tables["coil"].get(self.relay_coil, 0)),
            int(tables["holding_register"].get(self.dim_register, 0)),
        )

    def force(self, state: OutputState) -> None:
        """Change the outputs behind the agent's back (a technician's manual switch)."""
        self.ctl.tables["coil"][self.relay_coil] = int(state.on)
        self.ctl.tables["holding_register"][self.dim_register] = state.level
