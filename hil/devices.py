"""The emulated side of a rig: the drivers' own emulators started on ptys and a TCP gateway.

Nothing here emulates a device itself: each kind declares its emulator and its points' ranges in
its registration (:class:`kernel.kinds.RigSupport`), and the rig looks them up in the
:class:`~kernel.kinds.KindRegistry`. Serial sensors are the stream emulators of their kinds (pms,
sds011, nmea_gps, or any kind installed later; no sensor is named here); Modbus devices are
:class:`drivers.modbus.emulator.EmulatedDevice` slaves built from their profiles, wrapped here so a
fault can hit a share of requests; GPIO runs on gpiozero's MockFactory inside the agent. This module starts them, writes the matching ``devices`` section of the site config, knows
each point's plausible range, and turns a rig fault into the emulator's own fault switch.
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
from kernel.kinds import Kind, KindRegistry

Ranges = dict[str, tuple[float, float]]


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

    def __init__(self, rig: Rig, seed: int = 1, kinds: KindRegistry | None = None) -> None:
        self.rig = rig
        self.seed = seed
        self.kinds = kinds if kinds is not None else KindRegistry()
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
                emu = self._serial_emulator(sd)
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

    def serial_kind(self, d: SerialDevice) -> Kind:
        """The registered kind of a rig's serial sensor."""
        return self.kinds.rig_kind(d.sensor, "stream")

    def _serial_emulator(self, d: SerialDevice) -> Any:
        rig = self.serial_kind(d).rig
        assert rig is not None
        return rig.emulator_factory()(**{**rig.emulator_options, "seed": self.seed})

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
                kind = self.serial_kind(d)
                assert kind.rig is not None
                entry: dict[str, Any] = {
                    "driver": kind.name,
                    "name": d.name,
                    "line": {
                        "type": "pty",
                        "path": self.serial_paths[d.name],
                        "baudrate": d.baudrate or 9600,
                    },
                    "period_s": d.period_s,
                    "silence_s": settings.serial_silence_s,
                    **kind.rig.site_fields,
                }
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
        out: dict[str, Ranges] = {}
        for d in self.rig.devices:
            r: Ranges = {}
            if isinstance(d, ModbusDevice):
                modbus = self.kinds.rig_kind("modbus", "modbus").rig
                assert modbus is not None
                r.update(modbus.point_ranges({"profile": d.profile}))
            elif isinstance(d, SerialDevice):
                rig = self.serial_kind(d).rig
                assert rig is not None
                r.update(rig.point_ranges({"sensor": d.sensor}))
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
