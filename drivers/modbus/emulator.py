"""Emulated Modbus devices built from device profiles, with faults on demand.

Any profile becomes an emulated device with no extra code: each point gets a plausible motion from
its ``emulate`` hint, or from its unit and range (energy counters only rise, temperatures follow the
time of day, everything else wanders with noise inside its plausible range).

Front ends (all share :class:`EmulatedDevice`):

- :class:`RtuLine`: several unit ids on one RS-485 line over any transport (a pty master, one end
  of a memory pair), answering at the line's byte timing so bus efficiency is measured honestly;
- :class:`TcpServer`: Modbus TCP (MBAP) on a port, one or many unit ids;
- :func:`pymodbus_tcp_server`: the same devices served by pymodbus 3.16's own server
  (``SimDevice`` with an ``action`` hook), for conformance against a second implementation.

Faults (:class:`Fault`) are toggled at run time per device with :meth:`EmulatedDevice.set_fault`;
HIL rigs use :class:`Emulator` to start lines and servers and reach devices by unit id.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from drivers.modbus import protocol as p
from drivers.modbus.client import silence_s
from drivers.modbus.codec import apply_scale, decode_raw, encode_raw, unscale
from drivers.modbus.mbap import HEADER_LEN, MbapFramer
from drivers.modbus.profile import BIT_TABLES, Emulate, Point, Profile
from drivers.transports.base import Transport
from drivers.transports.fd import PtyPair
from kernel.errors import DeviceTimeout, FrameError, TransportError

ENERGY_UNITS = ("kWh", "Wh", "MWh", "kvarh", "varh", "kVAh", "m³", "m3", "L")
TEMPERATURE_UNITS = ("°C", "degC", "C")
TABLE_OF_FC = {1: "coil", 2: "discrete_input", 3: "holding_register", 4: "input_register"}


class Fault(enum.Enum):
    """What an emulated device does wrong, on demand."""

    NONE = "none"
    NO_ANSWER = "no_answer"  # silent, like a dead or unpowered device
    LATE = "late"  # answers ``arg`` seconds late
    CRC = "crc"  # answers with a wrong CRC (RTU) or a broken MBAP header (TCP)
    WRONG_UNIT = "wrong_unit"  # answers with another unit id
    EXCEPTION = "exception"  # answers with exception code ``arg`` (default 4, device failure)
    GARBAGE = "garbage"  # answers random bytes
    REBOOT = "reboot"  # silent for ``arg`` seconds, then comes back with its registers reset
    TCP_DROP = "tcp_drop"  # closes the TCP connection on the next request (TCP front ends)


@dataclass
class FirmwareBugs:
    """Deliberate firmware bugs, for showing that the conformance suite (``firmware_tests/``) catches them."""

    exception_codes: dict[int, int] = field(default_factory=dict)  # right code -> wrong code sent
    swap_words: bool = False  # multi-register values sent with their words in the wrong order
    answer_any_unit: bool = False  # answers requests addressed to any unit id
    accept_invalid_writes: bool = False  # takes writes outside the point's min..max


def default_motion(pt: Point) -> Emulate:
    """A plausible motion for a point from its unit and range."""
    if pt.emulate is not None:
        return pt.emulate
    lo, hi = pt.min, pt.max
    if pt.type in ("bool", "string", "bits"):
        return Emulate(kind="constant", value=0)
    if pt.unit in ENERGY_UNITS:
        return Emulate(kind="counter", value=max(lo or 0.0, 0.0) + 1000.0, rate_per_h=5.0)
    if pt.unit in TEMPERATURE_UNITS:
        centre = min(max(27.0, lo if lo is not None else 27.0), hi if hi is not None else 27.0)
        span = (hi - lo) if lo is not None and hi is not None else 20.0
        return Emulate(kind="diurnal", value=centre, amplitude=min(5.0, span / 4))
    if lo is not None and hi is not None:
        centre = lo + (hi - lo) * 0.4
        return Emulate(kind="walk", value=centre, amplitude=(hi - lo) * 0.01)
    return Emulate(kind="noise", value=lo if lo is not None else 1.0, amplitude=0.0)


@dataclass
class _Motion:
    point: Point
    spec: Emulate
    value: float
    started: float = field(default_factory=time.monotonic)


class EmulatedDevice:
    """A device's registers, driven by its profile's points; answers request PDUs.

    Addresses between a table's first and last point read as zero; addresses outside, or listed in
    ``holes``, are refused with exception 2 (illegal data address).
    """

    def __init__(
        self,
        profile: Profile,
        unit: int,
        seed: int = 0,
        turnaround_s: float = 0.0,
        holes: Iterable[tuple[str, int]] = (),
        update_every_s: float = 1.0,
    ) -> None:
        self.profile = profile
        self.unit = unit
        self.turnaround_s = turnaround_s
        self.holes = set(holes)
        self.update_every_s = update_every_s
        self.rng = random.Random(seed * 7919 + unit)
        self.fault = Fault.NONE
        self.fault_arg: float = 0.0
        self.bugs = FirmwareBugs()
        self._reboot_until = 0.0
        self.requests = 0
        self.registers_served = 0
        self.ranges: dict[str, tuple[int, int]] = {}
        for pt in profile.points:
            lo, hi = self.ranges.get(pt.table, (pt.address, pt.end))
            self.ranges[pt.table] = (min(lo, pt.address), max(hi, pt.end))
        self._motions: list[_Motion] = []
        self._pins: dict[str, float | bool | str] = {}
        self._last_update = 0.0
        self.reset()

    # -- state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Registers back to their power-on values (writable points to their minimum or zero)."""
        self.tables: dict[str, dict[int, int]] = {
            t: {} for t in ("coil", "discrete_input", "holding_register", "input_register")
        }
        self._motions = []
        for pt in self.profile.points:
            spec = default_motion(pt)
            start = spec.value if spec.value is not None else 0.0
            if pt.writable:
                start = pt.min if pt.min is not None and pt.min > 0 else 0.0
                spec = Emulate(kind="constant", value=start)
            self._motions.append(_Motion(pt, spec, start))
        self._last_update = 0.0
        self.update(force=True)
        for name, value in list(self._pins.items()):  # pinned values stand for the physical quantity
            self.set_value(name, value)

    def set_fault(self, fault: Fault | str, arg: float = 0.0) -> None:
        """Start (or with ``Fault.NONE`` stop) misbehaving."""
        self.fault = Fault(fault)
        self.fault_arg = arg
        if self.fault is Fault.REBOOT:
            self._reboot_until = time.monotonic() + (arg or 2.0)

    def set_value(self, name: str, value: float | bool | str) -> None:
        """Pin a point to ``value`` (engineering units) until the next :meth:`reset`."""
        for m in self._motions:
            if m.point.name == name:
                m.spec = Emulate(kind="constant", value=float(value) if not isinstance(value, str) else 0.0)
                m.value = float(value) if not isinstance(value, str) else 0.0
                self._store(m.point, value)
                self._pins[name] = value
                return
        raise KeyError(name)

    def update(self, force: bool = False) -> None:
        """Move every point (at most every ``update_every_s``)."""
        now = time.monotonic()
        if not force and now - self._last_update < self.update_every_s:
            return
        dt = now - self._last_update if self._last_update else 0.0
        self._last_update = now
        for m in self._motions:
            if not force and (m.point.writable or m.spec.kind == "constant"):
                continue
            self._store(m.point, self._next_value(m, dt))

    def _next_value(self, m: _Motion, dt: float) -> float | str:
        spec, pt = m.spec, m.point
        if pt.type == "string":
            return self.profile.model[: 2 * (pt.count or 1)]
        centre = spec.value if spec.value is not None else 0.0
        amp = spec.amplitude or 0.0
        if spec.kind == "counter":
            m.value += (spec.rate_per_h or 1.0) * dt / 3600.0
        elif spec.kind == "diurnal":
            now = time.localtime()
            hours = now.tm_hour + now.tm_min / 60.0
            m.value = (
                centre + amp * math.sin(2 * math.pi * (hours - 9.0) / 24.0) + self.rng.gauss(0, amp * 0.02)
            )
        elif spec.kind == "walk":
            m.value += self.rng.gauss(0, amp) if amp else 0.0
            m.value = centre + (m.value - centre) * 0.98  # pulled back towards the centre
        elif spec.kind == "noise":
            m.value = centre + (self.rng.uniform(-amp, amp) if amp else 0.0)
        else:
            m.value = centre
            return m.value  # pinned values are served as set, even implausible ones
        lo = pt.min if pt.min is not None else -math.inf
        hi = pt.max if pt.max is not None else math.inf
        m.value = min(max(m.value, lo), hi)
        return m.value

    def _store(self, pt: Point, value: float | bool | str) -> None:
        table = self.tables[pt.table]
        if pt.table in BIT_TABLES:
            table[pt.address] = 1 if value else 0
            return
        if pt.type == "bits" or (pt.type == "bool" and pt.bit is not None):
            mask = ((1 << pt.width) - 1) << (pt.bit or 0)
            old = table.get(pt.address, 0) & ~mask
            table[pt.address] = old | ((int(value) << (pt.bit or 0)) & mask)
            return
        if pt.type in ("uint16", "int16") and self.profile.byte_order_of(pt) == "big":
            raw16 = round((float(value) - pt.offset) / pt.scale)
            lo16, hi16 = (0, 0xFFFF) if pt.type == "uint16" else (-0x8000, 0x7FFF)
            table[pt.address] = min(max(raw16, lo16), hi16) & 0xFFFF
            return
        if pt.type in ("string", "bool"):
            regs = encode_raw(value, pt.type, self.profile.byte_order_of(pt), "big", pt.count)
        else:
            raw = unscale(float(value), pt.type, pt.scale, pt.offset)
            if pt.type.startswith("uint"):
                raw = max(raw, 0)
            regs = encode_raw(raw, pt.type, self.profile.byte_order_of(pt), self.profile.word_order_of(pt))
            if self.bugs.swap_words:
                regs.reverse()
        for i, r in enumerate(regs):
            table[pt.address + i] = r

    def value(self, name: str) -> float:
        """The current engineering value of a point as the emulator moves it."""
        for m in self._motions:
            if m.point.name == name:
                return m.value
        raise KeyError(name)

    # -- protocol -------------------------------------------------------------------------------
    @property
    def rebooting(self) -> bool:
        """True while a reboot fault keeps the device silent."""
        if self.fault is Fault.REBOOT:
            if time.monotonic() < self._reboot_until:
                return True
            self.fault = Fault.NONE
            self.reset()
        return False

    def _legal(self, table: str, address: int, count: int) -> bool:
        lo, hi = self.ranges.get(table, (0, 0))
        if address < lo or address + count > hi:
            return False
        return not any((table, a) in self.holes for a in range(address, address + count))

    def handle(self, pdu: bytes) -> bytes:
        """The response PDU to a request PDU (faults other than EXCEPTION are the front end's job)."""
        out = self._handle(pdu)
        if len(out) == 2 and out[0] & 0x80 and out[1] in self.bugs.exception_codes:
            out = bytes([out[0], self.bugs.exception_codes[out[1]]])
        return out

    def _handle(self, pdu: bytes) -> bytes:
        self.requests += 1
        fc = pdu[0]
        if self.fault is Fault.EXCEPTION:
            return bytes([fc | 0x80, int(self.fault_arg) or 4])
        try:
            if fc in (1, 2, 3, 4):
                address, count = struct.unpack(">HH", pdu[1:5])
                return self._read(fc, address, count)
            if fc in (5, 6):
                address, value = struct.unpack(">HH", pdu[1:5])
                if fc == 5 and value not in (0, 0xFF00):
                    return bytes([fc | 0x80, 3])
                return self._write(fc, address, [1 if value == 0xFF00 else 0] if fc == 5 else [value], pdu)
            if fc in (15, 16):
                address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
                data = pdu[6 : 6 + nbytes]
                if fc == 15:
                    values = [int(b) for b in p.unpack_bits(data, count)]
                else:
                    values = list(struct.unpack(f">{count}H", data))
                return self._write(fc, address, values, pdu)
        except struct.error:
            return bytes([fc | 0x80, 3])
        return bytes([fc | 0x80, 1])

    def _read(self, fc: int, address: int, count: int) -> bytes:
        table = TABLE_OF_FC[fc]
        limit = 2000 if fc in (1, 2) else 125
        if not 1 <= count <= limit:
            return bytes([fc | 0x80, 3])
        if not self._legal(table, address, count):
            return bytes([fc | 0x80, 2])
        self.update()
        cells = self.tables[table]
        values = [cells.get(a, 0) for a in range(address, address + count)]
        self.registers_served += count
        data = p.pack_bits([bool(v) for v in values]) if fc in (1, 2) else struct.pack(f">{count}H", *values)
        return bytes([fc, len(data)]) + data

    def _write(self, fc: int, address: int, values: Sequence[int], pdu: bytes) -> bytes:
        table = "coil" if fc in (5, 15) else "holding_register"
        writable = {
            a
            for pt in self.profile.points
            if pt.writable and pt.table == table
            for a in range(pt.address, pt.end)
        }
        if not all(a in writable for a in range(address, address + len(values))):
            return bytes([fc | 0x80, 2])
        if not self.bugs.accept_invalid_writes and not self._in_range(table, address, values):
            return bytes([fc | 0x80, 3])
        for i, v in enumerate(values):
            self.tables[table][address + i] = v
        return pdu[:5]

    def _in_range(self, table: str, address: int, values: Sequence[int]) -> bool:
        """Whether every point the write covers whole stays within its min..max."""
        end = address + len(values)
        for pt in self.profile.points:
            if pt.table != table or not pt.writable or pt.address < address or pt.end > end:
                continue
            if pt.table in BIT_TABLES or pt.type in ("bool", "string", "bits"):
                continue
            regs = values[pt.address - address : pt.end - address]
            raw = decode_raw(regs, pt.type, self.profile.byte_order_of(pt), self.profile.word_order_of(pt))
            value = apply_scale(raw, pt.scale, pt.offset)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
            if (pt.min is not None and value < pt.min) or (pt.max is not None and value > pt.max):
                return False
        return True


# -- RTU line ----------------------------------------------------------------------------------------
class RtuLine:
    """Several emulated devices on one RS-485 line, served over ``transport`` at the line's timing.

    A request's bytes reach the emulator at once through a pty or memory pair, so the line adds the
    time the request and the answer would spend on the wire, plus the device's 3.5-character
    end-of-frame detection and its turnaround, before the answer is written.
    """

    def __init__(self, transport: Transport, devices: Sequence[EmulatedDevice], baudrate: int = 9600) -> None:
        self.transport = transport
        self.devices = {d.unit: d for d in devices}
        self.baudrate = baudrate
        self.frames_in = 0
        self.bad_frames = 0
        self._task: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()

    def char_time(self) -> float:
        """Seconds per character (8N1: 10 bits)."""
        return self.transport.bits_per_char / self.baudrate

    async def start(self) -> None:
        """Open the transport and serve in the background."""
        self.transport.baudrate = self.baudrate
        await self.transport.open()
        self._task = asyncio.get_running_loop().create_task(
            self._serve(), name=f"emulator:{self.transport.name}"
        )

    async def stop(self) -> None:
        """Stop serving and close the transport."""
        for answer in list(self._answers):
            answer.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.transport.close()

    async def _serve(self) -> None:
        buf = bytearray()
        t35 = silence_s(self.transport)
        while True:
            try:
                chunk = await self.transport.read(512, 3600.0 if not buf else max(t35, 0.002) + 0.05)
            except DeviceTimeout:
                if len(buf) >= 4:
                    await self._answer(bytes(buf))  # a frame only silence delimits (unknown function)
                elif buf:
                    self.bad_frames += 1
                buf.clear()  # a partial frame followed by silence is discarded, as devices do
                continue
            except TransportError:
                return
            buf += chunk
            while len(buf) >= 8:
                need = p.rtu_request_length(bytes(buf[:7]))
                if need is None:
                    if len(buf) > 256:  # longer than any RTU frame: line noise
                        self.bad_frames += 1
                        buf.clear()
                    break  # unknown function: wait for the silence that ends the frame
                if len(buf) < need:
                    break
                frame, buf = bytes(buf[:need]), buf[need:]
                # Devices on a line act independently: a late answer must not hold up the next one.
                task = asyncio.get_running_loop().create_task(self._answer(frame))
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)

    async def _answer(self, frame: bytes) -> None:
        self.frames_in += 1
        try:
            p.check_crc(frame)
        except ValueError:
            self.bad_frames += 1
            return
        dev = self.devices.get(frame[0]) or next(
            (d for d in self.devices.values() if d.bugs.answer_any_unit), None
        )
        if dev is None or dev.rebooting or dev.fault in (Fault.NO_ANSWER, Fault.TCP_DROP):
            return
        pdu = dev.handle(frame[1:-2])
        out = p.rtu_frame(dev.unit, pdu)
        if dev.fault is Fault.CRC:
            out = out[:-1] + bytes([out[-1] ^ 0x5A])
        elif dev.fault is Fault.WRONG_UNIT:
            out = p.rtu_frame((dev.unit % 247) + 1, pdu)
        elif dev.fault is Fault.GARBAGE:
            out = bytes(dev.rng.randrange(256) for _ in range(len(out)))
        char = self.char_time()
        wait = len(frame) * char + silence_s(self.transport) + dev.turnaround_s + len(out) * char
        if dev.fault is Fault.LATE:
            wait += dev.fault_arg
        await asyncio.sleep(wait)
        try:
            await self.transport.write(out)
        except TransportError:
            return


# -- TCP ---------------------------------------------------------------------------------------------
class TcpServer:
    """Modbus TCP (MBAP) server for emulated devices; unit 0 or 255 reaches a lone device."""

    def __init__(
        self, devices: Sequence[EmulatedDevice], host: str = "127.0.0.1", port: int = 0, max_outstanding: int = 1
    ) -> None:
        self.devices = {d.unit: d for d in devices}
        self.host = host
        self.port = port
        # Requests of one connection served at once (a gateway's pipelining depth): each waits its
        # device's turnaround on its own, so answers may leave in another order than their requests.
        self.max_outstanding = max_outstanding
        self.connections = 0
        self.most_in_flight = 0  # the most requests of one connection served at once
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen (``port`` 0 picks a free port, then ``self.port`` holds it)."""
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        if self._server is not None:
            await self._server.wait_closed()

    def drop_connections(self) -> None:
        """Close every open client connection (a gateway reboot seen from the agent)."""
        for w in list(self._writers):
            w.close()

    def _device(self, unit: int) -> EmulatedDevice | None:
        if unit in self.devices:
            return self.devices[unit]
        if unit in (0, 255) and len(self.devices) == 1:
            return next(iter(self.devices.values()))
        return None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        box = _Outbox(writer)
        slots = asyncio.Semaphore(self.max_outstanding)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                h = MbapFramer.header(await reader.readexactly(HEADER_LEN), strict=False)
                pdu = await reader.readexactly(h.pdu_len)
                dev = self._device(h.unit)
                if dev is not None and dev.fault is Fault.TCP_DROP:
                    dev.fault = Fault.NONE
                    return
                if self.max_outstanding == 1:
                    await self._answer(box, h.tid, h.unit, pdu, dev)
                    continue
                await slots.acquire()
                task = asyncio.ensure_future(self._answer(box, h.tid, h.unit, pdu, dev))
                tasks.add(task)
                self.most_in_flight = max(self.most_in_flight, len(tasks))
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: slots.release())
        except (asyncio.IncompleteReadError, ConnectionError, FrameError, asyncio.CancelledError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, box: _Outbox, tid: int, unit: int, pdu: bytes, dev: EmulatedDevice | None) -> None:
        if dev is None:
            box.write(MbapFramer.frame(tid, unit, bytes([pdu[0] | 0x80, 11])))
            return
        if dev.rebooting or dev.fault is Fault.NO_ANSWER:
            return
        out = dev.handle(pdu)
        r_unit = unit
        if dev.fault is Fault.WRONG_UNIT:
            r_unit = (unit % 247) + 1
        frame = MbapFramer.frame(tid, r_unit, out)
        if dev.fault is Fault.CRC:
            frame = MbapFramer.frame(tid, r_unit, out, protocol=7)
        elif dev.fault is Fault.GARBAGE:
            frame = bytes(dev.rng.randrange(256) for _ in range(len(frame)))
        delay = dev.turnaround_s + (dev.fault_arg if dev.fault is Fault.LATE else 0.0)
        if delay:
            await asyncio.sleep(delay)
        box.write(frame)


class _Outbox:
    """A connection's answers of one loop turn, written together: pipelined requests that arrived in
    one segment are answered in one (as a gateway's TCP stack coalesces what it sends at once)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.buf = bytearray()

    def write(self, frame: bytes) -> None:
        if not self.buf:
            asyncio.get_running_loop().call_soon(self.flush)
        self.buf += frame

    def flush(self) -> None:
        if self.buf and not self.writer.is_closing():
            self.writer.write(bytes(self.buf))
        self.buf.clear()


# -- pymodbus front end --------------------------------------------------------------------------------
def pymodbus_devices(devices: Sequence[EmulatedDevice]) -> list[object]:
    """pymodbus ``SimDevice`` objects mirroring ``devices`` (values refreshed on every access)."""
    from pymodbus.constants import ExcCodes
    from pymodbus.simulator import DataType, SimData, SimDevice

    out: list[object] = []
    for dev in devices:
        blocks: list[list[object]] = []
        for table in ("coil", "discrete_input", "holding_register", "input_register"):
            lo, hi = dev.ranges.get(table, (0, 0))
            if hi <= lo and table in BIT_TABLES:
                # pymodbus wants every table non-empty: one bit far away stands for "no coils".
                blocks.append([SimData(65520, count=1, values=False, datatype=DataType.BITS)])
            elif hi <= lo:
                blocks.append([SimData(0, count=1, datatype=DataType.INVALID)])
            elif table in BIT_TABLES:
                blocks.append([SimData(lo, count=hi - lo, values=False, datatype=DataType.BITS)])
            else:
                blocks.append([SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)])

        async def action(
            fc: int,
            start: int,
            address: int,
            count: int,
            regs: list[int],
            set_values: object,
            dev: EmulatedDevice = dev,
        ) -> object:
            if dev.fault is Fault.EXCEPTION:
                return ExcCodes(int(dev.fault_arg) or 4)
            if dev.fault is Fault.LATE:
                await asyncio.sleep(dev.fault_arg)
            if set_values is not None and fc in (5, 6, 15, 16):
                # Writes go through the emulated device, so its rules and state stay the only truth.
                values = [int(v) for v in set_values]  # type: ignore[attr-defined]
                pdu = bytes([fc]) + address.to_bytes(2, "big") + bytes(3)
                answer = dev._write(fc, address, values, pdu)
                return ExcCodes(answer[1]) if answer[0] & 0x80 else None
            table = TABLE_OF_FC.get(fc)
            if table is not None and set_values is None:
                dev.update()
                cells = dev.tables[table]
                for i in range(len(regs)):
                    regs[i] = cells.get(start + i, 0)
            return None

        out.append(SimDevice(id=dev.unit, simdata=tuple(blocks), action=action))  # type: ignore[arg-type]
    return out


async def pymodbus_tcp_server(
    devices: Sequence[EmulatedDevice], port: int, host: str = "127.0.0.1"
) -> object:
    """Start pymodbus 3.16's TCP server for ``devices``; returns the server (``await s.shutdown()``)."""
    from pymodbus.server import ModbusTcpServer

    server = ModbusTcpServer(pymodbus_devices(devices), address=(host, port))  # type: ignore[arg-type]
    asyncio.get_running_loop().create_task(server.serve_forever())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if server.is_active():
            break
    return server


async def pymodbus_rtu_server(
    devices: Sequence[EmulatedDevice], baudrate: int = 9600
) -> tuple[object, Transport]:
    """pymodbus 3.16's RTU server for ``devices`` on one end of a fresh pseudo-terminal.

    Returns the server (``await s.shutdown()``) and the transport of the other end, to hand to a bus.
    pymodbus answers at once (no line timing); use :class:`RtuLine` for timing and line faults.
    """
    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer

    pair = PtyPair(baudrate)
    server = ModbusSerialServer(
        pymodbus_devices(devices),  # type: ignore[arg-type]
        framer=FramerType.RTU,
        port=pair.path,
        baudrate=baudrate,
    )
    asyncio.get_running_loop().create_task(server.serve_forever())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if server.is_active():
            break
    return server, pair.master


# -- the rig API -------------------------------------------------------------------------------------
class Emulator:
    """Starts emulated lines and servers and reaches their devices by name; used by ``hil/`` rigs.

    >>> emu = Emulator()
    >>> path = await emu.add_rtu_line([EmulatedDevice(load_profile("eastron-sdm120"), 1)], baudrate=9600)
    >>> emu.device(1).set_fault(Fault.NO_ANSWER)
    """

    def __init__(self) -> None:
        self.lines: list[RtuLine] = []
        self.servers: list[TcpServer] = []
        self._ptys: list[PtyPair] = []
        self._gateways: list[tuple[asyncio.Server, Transport, RtuLine]] = []
        self._devices: dict[int, EmulatedDevice] = {}

    async def add_rtu_line(self, devices: Sequence[EmulatedDevice], baudrate: int = 9600) -> str:
        """An emulated RS-485 line on a fresh pseudo-terminal; returns the path the agent opens."""
        pair = PtyPair(baudrate)
        line = RtuLine(pair.master, devices, baudrate)
        await line.start()
        self._ptys.append(pair)
        self.lines.append(line)
        self._remember(devices)
        return pair.path

    async def add_rtu_on(
        self, transport: Transport, devices: Sequence[EmulatedDevice], baudrate: int = 9600
    ) -> RtuLine:
        """An emulated RS-485 line on a transport you provide (a memory pair end, a TCP gateway)."""
        line = RtuLine(transport, devices, baudrate)
        await line.start()
        self.lines.append(line)
        self._remember(devices)
        return line

    async def add_tcp(self, devices: Sequence[EmulatedDevice], port: int = 0, host: str = "127.0.0.1") -> int:
        """A Modbus TCP server; returns its port."""
        server = TcpServer(devices, host, port)
        await server.start()
        self.servers.append(server)
        self._remember(devices)
        return server.port

    async def add_rtu_gateway(
        self, devices: Sequence[EmulatedDevice], baudrate: int = 9600, port: int = 0, host: str = "127.0.0.1"
    ) -> int:
        """An RS-485 line behind a transparent serial-to-TCP gateway (RTU frames inside TCP); returns the port.

        The line keeps its byte timing; one TCP client at a time is bridged to it, like the common
        single-socket gateways.
        """
        from drivers.transports.memory import memory_pair

        gw_end, line_end = memory_pair(baudrate)
        line = await self.add_rtu_on(line_end, devices, baudrate)
        await gw_end.open()

        async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async def down() -> None:
                while data := await reader.read(512):
                    await gw_end.write(data)

            async def up() -> None:
                while True:
                    try:
                        data = await gw_end.read(512, 3600.0)
                    except DeviceTimeout:
                        continue
                    writer.write(data)

            tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                writer.close()

        server = await asyncio.start_server(bridge, host, port)
        self._gateways.append((server, gw_end, line))
        return int(server.sockets[0].getsockname()[1])

    def _remember(self, devices: Sequence[EmulatedDevice]) -> None:
        for d in devices:
            self._devices[d.unit] = d

    def device(self, unit: int) -> EmulatedDevice:
        """The device with ``unit`` (last one added wins when ids repeat across lines)."""
        return self._devices[unit]

    async def close(self) -> None:
        """Stop everything started here."""
        for line in self.lines:
            await line.stop()
        for server in self.servers:
            await server.stop()
        for gateway, gw_end, _ in self._gateways:
            gateway.close()
            await gw_end.close()
        for pair in self._ptys:
            pair.close()
        self._gateways.clear()
        self.lines.clear()
        self.servers.clear()
        self._ptys.clear()
