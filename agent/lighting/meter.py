"""A circuit's energy meter: voltage, current, active power and imported energy.

:class:`SdmMeter` reads an Eastron SDM120 or SDM630 over Modbus (function 4, input registers,
IEEE-754 float32, high word first). Register addresses are from Eastron's published Modbus protocol
documents for the SDM120 and SDM630 (input register tables: voltage 30001, current 30007, active power
30013, total import kWh 30073; SDM630 phase 2/3 at +2/+4 registers).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any, Protocol

from agent.errors import DeviceError, DeviceTimeout, FrameError
from agent.lighting.config import MeterConfig

# Input register offsets (0-based PDU addresses).
SDM_VOLTAGE = 0x0000
SDM_CURRENT = 0x0006
SDM_POWER = 0x000C
SDM_IMPORT_KWH = 0x0048


@dataclass(frozen=True)
class MeterSample:
    """One reading of a circuit meter; ``mono`` is when it was taken (monotonic seconds)."""

    voltage: float
    current: float
    power: float
    energy_kwh: float
    mono: float


class CircuitMeter(Protocol):
    """What lamp-failure detection needs from a meter."""

    async def read(self) -> MeterSample:
        """Read the meter now."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


def decode_float(regs: list[int], offset: int = 0) -> float:
    """An SDM float32 from two registers, high word first."""
    if len(regs) < offset + 2:
        raise FrameError(f"need 2 registers at {offset}, got {len(regs)}")
    return float(struct.unpack(">f", struct.pack(">HH", regs[offset], regs[offset + 1]))[0])


def encode_float(value: float) -> list[int]:
    """Two registers holding ``value`` as an SDM float32 (for emulators)."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


class SdmMeter:
    """An SDM120 (or one phase of an SDM630) read in two block reads per sample.

    ``client`` is a pymodbus async client for the meter's bus (handed in: the meter does not open ports).
    """

    def __init__(self, cfg: MeterConfig, client: Any) -> None:
        self.cfg = cfg
        self.client = client
        self._phase = (cfg.phase - 1) * 2 if cfg.type == "sdm630" else 0

    async def _regs(self, address: int, count: int) -> list[int]:
        if not self.client.connected:
            await self.client.connect()
            if not self.client.connected:
                raise DeviceTimeout(
                    f"meter {self.cfg.host}:{self.cfg.port} unit {self.cfg.unit} does not answer"
                )
        try:
            rr = await self.client.read_input_registers(address, count=count, device_id=self.cfg.unit)
        except Exception as exc:  # pymodbus raises its own exception tree on I/O errors
            raise DeviceTimeout(f"meter {self.cfg.host}:{self.cfg.port} unit {self.cfg.unit}: {exc}") from exc
        if rr.isError():
            raise DeviceError(f"meter {self.cfg.host}:{self.cfg.port} unit {self.cfg.unit} refused: {rr}")
        return list(rr.registers)

    async def read(self) -> MeterSample:
        """Voltage, current and power of the circuit's phase, and the total imported energy."""
        block = await self._regs(0, SDM_POWER + 6)
        energy = await self._regs(SDM_IMPORT_KWH, 2)
        p = self._phase
        return MeterSample(
            voltage=decode_float(block, SDM_VOLTAGE + p),
            current=decode_float(block, SDM_CURRENT + p),
            power=decode_float(block, SDM_POWER + p),
            energy_kwh=decode_float(energy),
            mono=time.monotonic(),
        )

    async def close(self) -> None:
        """Close the client."""
        self.client.close()
