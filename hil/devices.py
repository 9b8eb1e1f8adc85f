"""The emulated side of a rig: the drivers' own emulators started on ptys and a TCP gateway.

Nothing here emulates a device itself: Modbus devices are :mod:`drivers.modbus.emulator` built from
their profiles, serial sensors are the :mod:`drivers.pms`, :mod:`drivers.sds011` and
:mod:`drivers.nmea` emulators, GPIO runs on gpiozero's MockFactory inside the agent. This module
starts them, writes the matching ``devices`` section of the site config, knows each point's
plausible range, and turns a rig fault into the emulator's own fault switch.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hil.rig import (
    AgentSettings,
    Crc,
    DeviceDead,
    Exception_,
    Garbage,
    GpioDevice,
    Late,
    ModbusDevice,
    Reboot,
    Rig,
    RtuLine,
    SerialDevice,
    SystemDevice,
    TcpDrop,
    Truncate,
    WrongUnit,
)

Ranges = dict[str, tuple[float, float]]

# Plausible ranges of the serial sensors' points, from their datasheets: PMS5003 and SDS011 measure
# 0-1000 (PMS) and 0-999.9 (SDS011) ug/m3; counts are 16-bit; NMEA latitude and longitude are WGS84
# degrees, GGA fix quality 0-8, HDOP 0-99.99.
SERIAL_RANGES: dict[str, Ranges] = {
    "pms5003": {
        **dict.fromkeys(("pm1_0_cf1", "pm2_5_cf1", "pm10_cf1", "pm1_0", "pm2_5", "pm10"), (0.0, 1000.0)),
        **dict.fromkeys(("n0_3", "n0_5", "n1_0", "n2_5", "n5_0", "n10"), (0.0, 65535.0)),
    },
    "sds011": {"pm2_5": (0.0, 999.9), "pm10": (0.0, 999.9)},
    "nmea": {
        "lat": (-90.0, 90.0),
        "lon": (-180.0, 180.0),
        "fix_quality": (0.0, 8.0),
        "satellites": (0.0, 99.0),
        "hdop": (0.0, 99.99),
    },
}
SERIAL_DRIVER = {"pms5003": "pms", "sds011": "sds011", "nmea": "nmea_gps"}


def rated_device(profile: Any, unit: int, seed: int) -> Any:
    """An emulated Modbus device whose fault can hit only a share of requests (see :class:`_Rated`)."""
    from drivers.modbus.emulator import EmulatedDevice, Fault

    class _Rated(EmulatedDevice):
        """``set_rated_fault(fault, arg, rate)``: the fault applies to a ``rate`` share of requests.

        Both front ends (``RtuLine`` and ``TcpServer``) look at ``rebooting`` once, first, for each
        request they are about to answer; that is where the fault for this request is drawn, so
        every later look at ``fault`` during the same request sees the same answer.
        ``tests/hil/test_devices.py`` holds the front ends to it.
        """

        def __init__(self) -> None:
            super().__init__(profile, unit, seed=seed)
            self.rated_fault = Fault.NONE
            self.rate = 1.0

        def set_rated_fault(self, fault: Any, arg: float = 0.0, rate: float = 1.0) -> None:
            """Switch a fault on (or off with NONE); a reboot leaves the standing fault to resume after it."""
            fault = Fault(fault)
            if fault is not Fault.REBOOT:
                self.rated_fault, self.rate = fault, rate
            self.set_fault(fault, arg)

        @property
        def rebooting(self) -> bool:
            if self.fault is Fault.REBOOT and super().rebooting:
                return True
            if self.rated_fault is not Fault.NONE:
                hit = self.rate >= 1.0 or self.rng.random() < self.rate
                self.fault = self.rated_fault if hit else Fault.NONE
            return False

    return _Rated()


class EmulatorBank:
    """Every emulator of one rig, started in the current event loop."""

    def __init__(self, rig: Rig, seed: int = 1) -> None:
        self.rig = rig
        self.seed = seed
        self.modbus: dict[str, Any] = {}  # device name -> EmulatedDevice
        self.serial: dict[str, Any] = {}  # device name -> StreamEmulator
        self.line_paths: dict[str, str] = {}  # RTU line name -> pty path
        self.gateway_ports: dict[str, int] = {}  # TCP line name -> port
        self.gateways: dict[str, Any] = {}  # TCP line name -> TcpServer
        self.serial_paths: dict[str, str] = {}
        self._emulator: Any = None
        self._serial_tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every line, gateway and serial sensor."""
        from drivers.modbus.emulator import Emulator
        from drivers.modbus.kind import cached_profile

        self._emulator = Emulator()
        for line in self.rig.lines:
            devs = [d for d in self.rig.devices if isinstance(d, ModbusDevice) and d.line == line.name]
            emulated = [rated_device(cached_profile(d.profile), d.unit, self.seed) for d in devs]
            for d, e in zip(devs, emulated, strict=True):
                self.modbus[d.name] = e
            if isinstance(line, RtuLine):
                self.line_paths[line.name] = await self._emulator.add_rtu_line(emulated, line.baudrate)
            else:
                self.gateway_ports[line.name] = await self._emulator.add_tcp(emulated)
                self.gateways[line.name] = self._emulator.servers[-1]
        for sd in self.rig.devices:
            if isinstance(sd, SerialDevice):
                emu = _serial_emulator(sd, self.seed)
                ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                self._serial_tasks.append(asyncio.create_task(emu.serve(ready), name=f"emu:{sd.name}"))
                self.serial_paths[sd.name] = await asyncio.wait_for(ready, 10.0)
                self.serial[sd.name] = emu

    async def close(self) -> None:
        """Stop every emulator and release the ptys and ports."""
        for task in self._serial_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._serial_tasks.clear()
        if self._emulator is not None:
            await self._emulator.close()
            self._emulator = None

    # -- site config ----------------------------------------------------------------------------

    def site_devices(self, settings: AgentSettings) -> list[dict[str, Any]]:
        """The ``devices`` section of the generated site config."""
        lines = {ln.name: ln for ln in self.rig.lines}
        out: list[dict[str, Any]] = []
        for d in self.rig.devices:
            if isinstance(d, ModbusDevice):
                line = lines[d.line]
                if isinstance(line, RtuLine):
                    spec: dict[str, Any] = {
                        "type": "pty",
                        "path": self.line_paths[line.name],
                        "baudrate": line.baudrate,
                        "parity": line.parity,
                    }
                else:
                    spec = {"type": "tcp", "host": "127.0.0.1", "port": self.gateway_ports[line.name]}
                out.append(
                    {
                        "driver": "modbus",
                        "name": d.name,
                        "profile": d.profile,
                        "unit": d.unit,
                        "line": spec,
                        "poll": {"fast_s": d.poll_s, "slow_s": max(d.poll_s, 10.0)},
                        "timeout_s": settings.response_timeout_s,
                        "backoff_min_s": 0.5,
                        "backoff_max_s": settings.device_backoff_max_s,
                    }
                )
            elif isinstance(d, SerialDevice):
                entry: dict[str, Any] = {
                    "driver": SERIAL_DRIVER[d.sensor],
                    "name": d.name,
                    "line": {
                        "type": "pty",
                        "path": self.serial_paths[d.name],
                        "baudrate": d.baudrate or 9600,
                    },
                    "period_s": d.period_s,
                    "silence_s": settings.serial_silence_s,
                }
                if d.sensor in ("pms5003", "sds011"):
                    entry["warmup_s"] = 0.0
                out.append(entry)
            elif isinstance(d, GpioDevice):
                out.append(
                    {
                        "driver": "gpio",
                        "name": d.name,
                        "pin_factory": "mock",
                        "report_period_s": d.period_s,
                        "outputs": [o.model_dump() for o in d.outputs],
                        "inputs": [i.model_dump() for i in d.inputs],
                    }
                )
            elif isinstance(d, SystemDevice):
                out.append({"driver": "system", "name": d.name, "period_s": d.period_s})
        return out

    def ranges(self) -> dict[str, Ranges]:
        """device -> point -> (low, high): the profile's or datasheet's range, then the rig's overrides."""
        from drivers.modbus.kind import cached_profile

        out: dict[str, Ranges] = {}
        for d in self.rig.devices:
            r: Ranges = {}
            if isinstance(d, ModbusDevice):
                for pt in cached_profile(d.profile).points:
                    if pt.min is not None and pt.max is not None:
                        r[pt.name] = (float(pt.min), float(pt.max))
            elif isinstance(d, SerialDevice):
                r.update(SERIAL_RANGES[d.sensor])
            elif isinstance(d, GpioDevice):
                r.update({o.name: (0.0, 1.0) for o in d.outputs})
            r.update(d.ranges)
            out[d.name] = r
        return out

    # -- faults ---------------------------------------------------------------------------------

    def inject(self, fault: Any, on: bool) -> None:
        """Switch a device or line fault on or off in its emulator."""
        if isinstance(fault, TcpDrop):
            if on:
                self.gateways[fault.line].drop_connections()
            return
        if fault.device in self.modbus:
            self._modbus_fault(self.modbus[fault.device], fault, on)
        else:
            self._serial_fault(self.serial[fault.device], fault, on)

    @staticmethod
    def _modbus_fault(dev: Any, fault: Any, on: bool) -> None:
        from drivers.modbus.emulator import Fault

        if isinstance(fault, Reboot):
            if on:
                dev.set_rated_fault(Fault.REBOOT, fault.down_s)
            return  # the emulator comes back by itself after down_s
        if not on:
            dev.set_rated_fault(Fault.NONE)
            return
        kinds: dict[type, tuple[Any, float]] = {
            DeviceDead: (Fault.NO_ANSWER, 0.0),
            Crc: (Fault.CRC, 0.0),
            Garbage: (Fault.GARBAGE, 0.0),
            WrongUnit: (Fault.WRONG_UNIT, 0.0),
            Late: (Fault.LATE, getattr(fault, "delay_s", 0.0)),
            Exception_: (Fault.EXCEPTION, float(getattr(fault, "code", 4))),
        }
        kind, arg = kinds[type(fault)]
        dev.set_rated_fault(kind, arg, getattr(fault, "rate", 1.0))

    @staticmethod
    def _serial_fault(emu: Any, fault: Any, on: bool) -> None:
        if isinstance(fault, DeviceDead):
            emu.faults.set(silence=on)
            return
        keys: dict[type, str] = {Crc: "bad_checksum", Garbage: "garbage", Truncate: "truncate"}
        key = keys[type(fault)]
        emu.faults.set(**{key: fault.rate if on else 0.0})


def _serial_emulator(d: SerialDevice, seed: int) -> Any:
    if d.sensor == "pms5003":
        from drivers.pms.emulator import PmsEmulator

        return PmsEmulator(fast=True, seed=seed)
    if d.sensor == "sds011":
        from drivers.sds011.emulator import Sds011Emulator

        return Sds011Emulator(seed=seed)
    from drivers.nmea.emulator import NmeaEmulator

    return NmeaEmulator(seed=seed)
