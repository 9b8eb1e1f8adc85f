"""Emulators for lighting tests and HIL benches: a lamp bank behind an Eastron SDM meter, and a
Modbus lighting controller, each served by a real pymodbus TCP server.

The SDM emulator follows the SDM120 input-register map (float32, high word first): voltage 0x0000,
current 0x0006, active power 0x000C, total import kWh 0x0048; an SDM630 keeps phases 2 and 3 at +2
and +4. Its values come from a :class:`LampBank` that follows the circuit's real output (relay and
PWM pins) and can be given failed lamps or a stuck contactor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from agent.lighting.meter import SDM_CURRENT, SDM_IMPORT_KWH, SDM_POWER, SDM_VOLTAGE, encode_float
from agent.lighting.outputs import OutputState


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
        on = st.on or self.stuck_on
        if not on:
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


class SdmEmulator:
    """An SDM120/SDM630 on Modbus TCP whose registers are refreshed from a :class:`LampBank` on each read."""

    def __init__(self, bank: LampBank, unit: int = 1, model: str = "sdm120", phase: int = 1) -> None:
        self.bank = bank
        self.unit = unit
        self.phase_offset = (phase - 1) * 2 if model == "sdm630" else 0
        self.reads = 0
        self.server: ModbusTcpServer | None = None
        self.device = SimDevice(
            id=unit,
            simdata=[SimData(0, count=0x50, values=0, datatype=DataType.REGISTERS)],
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        if function_code not in (3, 4):
            return
        self.reads += 1
        volts, amps, watts, kwh = self.bank.sample()
        p = self.phase_offset
        for reg, value in (
            (SDM_VOLTAGE + p, volts),
            (SDM_CURRENT + p, amps),
            (SDM_POWER + p, watts),
            (SDM_IMPORT_KWH, kwh),
        ):
            registers[reg - start_address : reg - start_address + 2] = encode_float(value)
        return

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``."""
        self.server = ModbusTcpServer(self.device, address=(host, port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


class LightingControllerEmulator:
    """A Modbus TCP lighting controller: a relay coil and a level holding register.

    pymodbus's shared register space keeps coil ``n`` in bit ``n % 16`` of register ``n``.
    """

    def __init__(
        self, unit: int = 1, relay_coil: int = 0, dim_register: int = 1, initial: OutputState | None = None
    ) -> None:
        self.relay_coil = relay_coil
        self.dim_register = dim_register
        self.writes = 0
        values = [0] * 16
        if initial is not None:
            values[relay_coil] = int(initial.on) << (relay_coil % 16)
            values[dim_register] = initial.level
        self._initial = initial or OutputState(False, 0)
        self.registers: list[int] = []
        self.server: ModbusTcpServer | None = None
        self.device = SimDevice(
            id=unit,
            simdata=[SimData(0, count=16, values=values, datatype=DataType.REGISTERS)],
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        self.registers = registers
        if set_values:
            self.writes += 1

    def state(self) -> OutputState:
        """What the controller's outputs show (for a :class:`LampBank`)."""
        if not self.registers:
            return self._initial
        coil = bool(self.registers[self.relay_coil] >> (self.relay_coil % 16) & 1)
        return OutputState(coil, int(self.registers[self.dim_register]))

    def force(self, state: OutputState) -> None:
        """Change the outputs behind the agent's back (a technician's manual switch)."""
        self.registers[self.relay_coil] = int(state.on) << (self.relay_coil % 16)
        self.registers[self.dim_register] = state.level

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``."""
        self.server = ModbusTcpServer(self.device, address=(host, port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
