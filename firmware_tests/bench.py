"""The device under test, real or emulated, reached from synchronous pytest tests.

A :class:`Bench` runs its own event loop on a thread; tests call :meth:`Bench.run` with a
coroutine. The device under test is either a real one (``--port``: a serial device, a pty,
``tcp://host:port`` or ``rtu+tcp://host:port``) or, by default, a profile-driven emulator from
:mod:`drivers.modbus.emulator` on a fresh pseudo-terminal, optionally with a deliberate firmware
bug (``--bug``) so the suite can show that it catches it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from drivers.modbus.client import ModbusClient
from drivers.modbus.codec import apply_scale, decode_raw, encode_raw, unscale
from drivers.modbus.emulator import EmulatedDevice, Emulator, Fault
from drivers.modbus.profile import BIT_TABLES, READ_FC, Point, Profile, load_profile
from drivers.transports.base import Transport
from drivers.transports.config import framing_of, parse_port
from drivers.transports.fd import PtyTransport
from kernel.kinds import KindRegistry

T = TypeVar("T")

# Firmware bugs the emulator can be given (``--bug``), and what each does.
BUGS: dict[str, str] = {
    "none": "a correct device",
    "wrong-exception": "answers illegal data address with exception 4 instead of 2",
    "word-order": "sends 32/64-bit values with their words swapped",
    "late": "answers 0.6 s late (over the default 0.5 s limit)",
    "bad-crc": "sends answers with a wrong CRC",
    "any-unit": "answers requests for every unit id",
    "accept-invalid-writes": "accepts writes outside the point's range",
    "no-illegal-function": "answers an unknown function with exception 2 instead of 1",
}


@dataclass
class Options:
    """What the bench was asked to test (from the pytest command line)."""

    profile: str
    port: str | None = None
    baud: int = 9600
    parity: str = "N"
    unit: int = 1
    timeout_s: float = 2.0
    answer_limit_s: float | None = None
    bug: str = "none"
    expect: dict[str, float] = field(default_factory=dict)
    tolerance: float = 0.01
    illegal_function: int = 0x28
    illegal_address: int | None = None
    other_unit: int | None = None


class Bench:
    """The device under test and a Modbus client to it, on a private event loop."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.profile: Profile = load_profile(opts.profile)
        self.unit = opts.unit
        self.device: EmulatedDevice | None = None
        self._emulator: Emulator | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="firmware-bench", daemon=True)
        self._thread.start()
        self.transport: Transport
        self.client: ModbusClient
        self.run(self._open())

    @property
    def emulated(self) -> bool:
        """True when the device under test is the built-in emulator."""
        return self.device is not None

    @property
    def answer_limit_s(self) -> float:
        """Longest turnaround allowed: ``--answer-limit``, else the profile's ``max_answer_s``."""
        if self.opts.answer_limit_s is not None:
            return self.opts.answer_limit_s
        return float(getattr(self.profile, "max_answer_s", 0.5))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the bench loop and return its result."""
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout if timeout is not None else self.opts.timeout_s * 4 + 5)

    async def _open(self) -> None:
        if self.opts.port is None:
            self.device = emulated_slave(self.profile, self.unit)
            apply_bug(self.device, self.opts.bug)
            self._emulator = Emulator()
            path = await self._emulator.add_rtu_line([self.device], baudrate=self.opts.baud)
            self.transport = PtyTransport(path, self.opts.baud)
            framing = "rtu"
        else:
            line = parse_port(self.opts.port, self.opts.baud, self.opts.parity)
            self.transport = line.build()
            framing = framing_of(line)
        await self.transport.open()
        self.client = ModbusClient(self.transport, framing)  # type: ignore[arg-type]

    async def _close(self) -> None:
        await self.transport.close()
        if self._emulator is not None:
            await self._emulator.close()

    def close(self) -> None:
        """Close the client, stop the emulator and the loop."""
        try:
            self.run(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # -- helpers the tests use -------------------------------------------------------------------
    def read_registers(self, table: str, address: int, count: int, unit: int | None = None) -> list[Any]:
        """Read with the table's function code."""
        fc = READ_FC[table]
        u = self.unit if unit is None else unit
        return self.run(self.client.read(u, fc, address, count, self.opts.timeout_s))

    def read_point(self, pt: Point) -> int | float | str | bool:
        """Read and decode one point as the profile describes it."""
        regs = self.read_registers(pt.table, pt.address, pt.registers())
        if pt.table in BIT_TABLES:
            return bool(regs[0])
        raw = decode_raw(
            regs, pt.type, self.profile.byte_order_of(pt), self.profile.word_order_of(pt), pt.bit, pt.width
        )
        return apply_scale(raw, pt.scale, pt.offset)

    def encode_point(self, pt: Point, value: float | bool) -> list[int]:
        """Registers holding ``value`` for a write (raw, unscaled, in the profile's orders)."""
        if pt.table in BIT_TABLES or pt.type == "bool":
            return [1 if value else 0]
        raw = unscale(float(value), pt.type, pt.scale, pt.offset)
        return encode_raw(raw, pt.type, self.profile.byte_order_of(pt), self.profile.word_order_of(pt))

    def write_point(self, pt: Point, value: float | bool) -> None:
        """Write one point (function 5 for a coil, 6 or 16 for registers)."""
        if pt.table == "coil":
            self.run(self.client.write_coil(self.unit, pt.address, bool(value), self.opts.timeout_s))
            return
        regs = self.encode_point(pt, value)
        self.run(self.client.write_registers(self.unit, pt.address, regs, self.opts.timeout_s))

    def reference(self, pt: Point) -> float | bool | None:
        """The value the point should read: ``--expect``, or one pinned in the emulator; else None."""
        if pt.name in self.opts.expect:
            return self.opts.expect[pt.name]
        if self.device is None or pt.type in ("string", "bits"):
            return None
        value = golden_value(pt)
        device = self.device

        async def pin() -> None:
            device.set_value(pt.name, value)

        self.run(pin())
        return value

    def wire_time_s(self, request_bytes: int, answer_bytes: int) -> float:
        """Time the request and the answer spend on the line, plus the inter-frame silence."""
        char = self.transport.char_time()
        return (request_bytes + answer_bytes + 3.5) * char

    def timed_read(self, pt: Point) -> float:
        """Seconds a read of ``pt`` took beyond its time on the wire."""
        t0 = time.monotonic()
        self.read_registers(pt.table, pt.address, pt.registers())
        elapsed = time.monotonic() - t0
        data = (pt.registers() + 7) // 8 if pt.table in BIT_TABLES else 2 * pt.registers()
        return elapsed - self.wire_time_s(8, 5 + data)


def golden_value(pt: Point) -> float | bool:
    """A value inside the point's range that a wrong word or byte order cannot reproduce."""
    if pt.table in BIT_TABLES or pt.type == "bool":
        return True
    lo, hi = pt.min, pt.max
    if lo is not None and hi is not None:
        value = lo + (hi - lo) * 0.37
    elif lo is not None:
        value = lo + 123.4
    elif hi is not None:
        value = hi - 123.4
    else:
        value = 42.3
    if pt.type.startswith(("int", "uint")):
        value = round((value - pt.offset) / pt.scale) * pt.scale + pt.offset
    if pt.type.startswith("uint") and value < pt.offset:
        value = pt.offset
    return value


def plausible_float(value: float) -> str | None:
    """Why a decoded float cannot be a real reading (None when it can)."""
    if not math.isfinite(value):
        return f"{value} is not finite"
    if value != 0 and abs(value) < 1e-30:
        return f"{value:g} is a denormal-sized number: wrong word or byte order?"
    return None


def emulated_slave(profile: Profile, unit: int) -> EmulatedDevice:
    """The device under test when none is given: the modbus kind's registered emulator for ``profile``."""
    rig = KindRegistry().rig_kind("modbus", "modbus").rig
    assert rig is not None
    device = rig.emulator_factory()(profile, unit, seed=1, turnaround_s=0.005)
    if not isinstance(device, EmulatedDevice):
        raise TypeError(f"the modbus kind's emulator {rig.emulator} is not an EmulatedDevice")
    return device


def apply_bug(dev: EmulatedDevice, bug: str) -> None:
    """Give an emulated device one of :data:`BUGS`."""
    if bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r} (known: {', '.join(BUGS)})")
    bugs = dev.bugs
    if bug == "wrong-exception":
        bugs.exception_codes[2] = 4
    elif bug == "no-illegal-function":
        bugs.exception_codes[1] = 2
    elif bug == "word-order":
        bugs.swap_words = True
        dev.reset()
    elif bug == "late":
        dev.set_fault(Fault.LATE, 0.6)
    elif bug == "bad-crc":
        dev.set_fault(Fault.CRC)
    elif bug == "any-unit":
        bugs.answer_any_unit = True
    elif bug == "accept-invalid-writes":
        bugs.accept_invalid_writes = True
