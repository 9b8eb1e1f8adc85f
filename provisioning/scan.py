"""RS-485 / Modbus bus scan: which devices answer, at which unit id, baud rate and parity, and what they are.

The scan walks the technician's bounds (baud rates, parities, unit ids) with one short probe per
unit: the probe's timeout is the time the request and the answer need on the wire at that baud rate
plus a small turnaround margin, never a fixed second. A unit that answers (with data or with an
exception, which proves it is there) is then identified: Read Device Identification (function 43/14)
where the device supports it, and always a fingerprint against the shipped profiles (their points'
plausible ranges and which addresses the device refuses). Float points are decoded in the four
byte/word orders to find the device's order. Garbled answers at one unit id (two devices sharing
it) and a line that never goes quiet (a device that keeps talking) are reported as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.modbus import protocol as p
from drivers.modbus.client import ModbusClient, silence_s
from drivers.modbus.codec import apply_scale, decode_raw
from drivers.modbus.plan import Block, coalesce
from drivers.modbus.profile import BIT_TABLES, Point, Profile, load_profile, shipped_profiles
from drivers.transports.base import Transport
from drivers.transports.config import AnyLine, PtyLine, RtuOverTcpLine, SerialLine, TcpLine, parse_port
from drivers.transports.fd import PtyTransport
from drivers.transports.tcp import TcpTransport
from kernel.errors import ConfigError, DeviceError, DeviceRefused, DeviceTimeout, FrameError
from kernel.i18n import N_, Message

DEFAULT_BAUDS = (9600, 19200, 4800, 2400, 38400, 115200)
GATEWAY_ABSENT = (10, 11)  # gateway path unavailable / target failed to respond: nobody there
ORDERS = (("big", "big"), ("big", "little"), ("little", "big"), ("little", "little"))
MATCH_THRESHOLD = 0.75


@dataclass
class ScanOptions:
    """What to walk; the technician narrows these on the command line."""

    port: str
    bauds: Sequence[int] = DEFAULT_BAUDS[:3]
    parities: Sequence[str] = ("N",)
    units: Sequence[int] = tuple(range(1, 248))
    margin_s: float = 0.05
    identify: bool = True


@dataclass
class FoundDevice:
    """A unit that answered, and what it was identified as."""

    unit: int
    baudrate: int | None
    parity: str
    framing: str
    profile: str | None = None
    score: float = 0.0
    vendor: str = ""
    product: str = ""
    identified_by: str = ""
    byte_order: str | None = None
    word_order: str | None = None
    order_differs: bool = False
    candidates: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ScanResult:
    """Everything a scan found: devices, problems, and how long it took against the wire's own limit."""

    line: AnyLine
    framing: str
    devices: list[FoundDevice] = field(default_factory=list)
    problems: list[Message] = field(default_factory=list)
    notes: list[Message] = field(default_factory=list)
    probes: int = 0
    elapsed_s: float = 0.0
    wire_limit_s: float = 0.0
    identify_s: float = 0.0  # part of elapsed_s spent identifying the devices that answered


# -- timing -----------------------------------------------------------------------------------------
def char_time(baud: int, parity: str = "N", stopbits: int = 1) -> float:
    """Seconds one character takes at ``baud`` (start, 8 data, parity, stop bits)."""
    return (1 + 8 + (parity != "N") + stopbits) / baud


def probe_timeout(baud: int | None, margin_s: float) -> float:
    """The turnaround a probe allows: the device's own end-of-frame silence (3.5 characters) plus
    ``margin_s``. The client adds the request's and the answer's time on the wire to this."""
    if not baud:
        return margin_s
    return 3.5 * char_time(baud) + margin_s


def probe_wire_s(baud: int | None, margin_s: float, answered: bool, answer_bytes: int = 7) -> float:
    """What one probe needs on the wire: the request, then either the answer and the silence that
    must follow it, or the whole timeout (which already contains that silence)."""
    if not baud:
        return 0.0
    c = char_time(baud)
    gap = 0.00175 if baud > 19200 else 3.5 * c
    request = 8 * c
    if answered:
        return request + 3.5 * c + answer_bytes * c + gap
    return request + probe_timeout(baud, margin_s) + 7 * c


# -- lines ------------------------------------------------------------------------------------------
class _ScanPty(PtyTransport):
    """A pty whose termios speed is set like a real serial port's (and put back on close)."""

    def __init__(self, path: str, baudrate: int, parity: str) -> None:
        super().__init__(path, baudrate, 1 + 8 + (parity != "N") + 1)
        self._saved: list[Any] | None = None

    async def _open(self) -> None:
        await super()._open()
        assert self._fd is not None
        speed = getattr(termios, f"B{self.baudrate}", None)
        if speed is not None:
            with contextlib.suppress(termios.error):
                attrs = termios.tcgetattr(self._fd)
                self._saved = list(attrs)
                attrs[4] = attrs[5] = speed
                termios.tcsetattr(self._fd, termios.TCSANOW, attrs)

    async def _close(self) -> None:
        if self._fd is not None and self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
        await super()._close()


def build_transport(line: AnyLine, baud: int | None, parity: str) -> Transport:
    """The transport of ``line`` at ``baud``/``parity`` (serial settings do not apply to Modbus TCP)."""
    if isinstance(line, PtyLine):
        return _ScanPty(line.path, baud or line.baudrate, parity)
    if isinstance(line, SerialLine):
        return line.model_copy(update={"baudrate": baud, "parity": parity}).build()
    if isinstance(line, RtuOverTcpLine):
        return TcpTransport(line.host, line.port, line.connect_timeout_s, baudrate=baud or line.baudrate)
    return line.build()


async def detect_tcp_framing(host: str, port: int, timeout: float = 0.5) -> str:
    """``tcp`` when ``host:port`` answers an MBAP request, else ``rtu`` (a transparent serial gateway)."""
    transport = TcpTransport(host, port, 3.0)
    await transport.open()
    try:
        await transport.write(struct.pack(">HHHBBHH", 0x4B42, 0, 6, 1, 3, 0, 1))
        head = await transport.read_exactly(7, timeout)
        return "tcp" if head[:2] == b"KB" and head[2:4] == b"\x00\x00" else "rtu"
    except DeviceTimeout:
        return "rtu"
    finally:
        await transport.close()


# -- device identification (function 43 / MEI 14) ---------------------------------------------------
DEVICE_ID_OBJECTS = {0: "vendor", 1: "product", 2: "revision"}


def parse_device_id(pdu: bytes) -> dict[str, str]:
    """Objects of a Read Device Identification answer (basic stream): vendor, product, revision."""
    if len(pdu) < 7 or pdu[0] != 0x2B or pdu[1] != 0x0E:
        raise FrameError(f"not a device identification answer: {pdu[:8].hex()}")
    count = pdu[6]
    pos = 7
    out: dict[str, str] = {}
    for _ in range(count):
        if pos + 2 > len(pdu):
            raise FrameError("device identification answer is truncated")
        obj, length = pdu[pos], pdu[pos + 1]
        value = pdu[pos + 2 : pos + 2 + length]
        if len(value) != length:
            raise FrameError("device identification answer is truncated")
        out[DEVICE_ID_OBJECTS.get(obj, f"object_{obj}")] = value.decode("ascii", "replace").strip()
        pos += 2 + length
    return out


async def rtu_raw(client: ModbusClient, unit: int, pdu: bytes, timeout: float) -> bytes:
    """One RTU transaction whose answer length is unknown (read until the line goes quiet)."""
    t = client.transport
    char = t.char_time()
    gap = silence_s(t)
    wait = max(t.last_rx, 0.0) + gap - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
    t.reset_input()
    frame = p.rtu_frame(unit, pdu)
    await t.write(frame)
    deadline = time.monotonic() + len(frame) * char + timeout + 260 * char
    data = bytearray(await t.read_exactly(3, max(deadline - time.monotonic(), 0.0)))
    quiet = max(4 * gap, 0.02)
    while True:
        try:
            data += await t.read(256, quiet)
        except DeviceTimeout:
            break
    p.check_crc(bytes(data))
    if data[0] != unit:
        raise FrameError(f"answer from unit {data[0]} to a request for unit {unit}")
    return bytes(data[1:-2])


async def read_device_id(client: ModbusClient, unit: int, timeout: float) -> dict[str, str] | None:
    """Vendor, product and revision by function 43/14, or None where the device does not support it."""
    pdu = bytes([0x2B, 0x0E, 0x01, 0x00])
    try:
        if client.framing == "tcp":
            answer = await client.transact(unit, pdu, timeout)
        else:
            answer = await rtu_raw(client, unit, pdu, timeout)
        if answer and answer[0] & 0x80:
            return None
        return parse_device_id(answer)
    except DeviceError:
        return None


# -- fingerprints -----------------------------------------------------------------------------------
def all_profiles() -> dict[str, Profile]:
    """The shipped profiles by name."""
    return {name: load_profile(name) for name in shipped_profiles()}


def _value(pt: Point, regs: Sequence[int], byte_order: str, word_order: str) -> float | None:
    try:
        raw = decode_raw(regs, pt.type, byte_order, word_order, pt.bit, pt.width)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None
    value = apply_scale(raw, pt.scale, pt.offset)
    if isinstance(value, (str, bool)):
        return None
    return float(value)


def plausible(pt: Point, value: float | None) -> bool:
    """A finite value inside the point's plausible range."""
    if value is None or not math.isfinite(value):
        return False
    if pt.min is not None and value < pt.min:
        return False
    return not (pt.max is not None and value > pt.max)


@dataclass
class Fingerprint:
    """How well one profile explains what a unit answered."""

    profile: str
    score: float
    matched: float
    refused: int
    byte_order: str
    word_order: str
    order_differs: bool


class RegisterCache:
    """Reads a unit's blocks once, remembering refusals (exception patterns are part of a fingerprint)."""

    def __init__(self, client: ModbusClient, unit: int, timeout: float) -> None:
        self.client = client
        self.unit = unit
        self.timeout = timeout
        self._seen: dict[tuple[int, int, int], list[int] | list[bool] | int | None] = {}

    async def read(self, block: Block) -> list[int] | list[bool] | int | None:
        """Values, an exception code, or None when the unit stayed silent."""
        key = (block.fc, block.address, block.count)
        if key not in self._seen:
            self._seen[key] = None
            for _attempt in range(2):  # the unit answered the probe: one silence may be a hiccup
                try:
                    self._seen[key] = await self.client.read(
                        self.unit, block.fc, block.address, block.count, self.timeout
                    )
                except DeviceRefused as exc:
                    self._seen[key] = exc.code or 4
                except (DeviceTimeout, FrameError):
                    continue
                break
        return self._seen[key]


async def fingerprint(cache: RegisterCache, name: str, profile: Profile) -> Fingerprint:
    """Read ``profile``'s points from the unit and score how plausible they are (0..1)."""
    readable: list[tuple[Point, list[int]]] = []
    refused = 0
    blocks = coalesce(profile.points, profile.max_registers, profile.max_bits, profile.max_gap)
    for block in blocks:
        got = await cache.read(block)
        if not isinstance(got, list):
            refused += len(block.points)
            continue
        for pt in block.points:
            lo = pt.address - block.address
            if pt.table not in BIT_TABLES:
                readable.append((pt, [int(v) for v in got[lo : lo + pt.registers()]]))
    best: tuple[str, str] = (profile.byte_order, profile.word_order)
    floats = [(pt, regs) for pt, regs in readable if pt.type.startswith("float")]
    if floats:
        scores = {
            order: sum(
                plausible(pt, _value(pt, regs, *order)) and _value(pt, regs, *order) != 0.0
                for pt, regs in floats
            )
            for order in ORDERS
        }
        top = max(scores.values())
        if scores[best] < top:
            best = max(ORDERS, key=lambda o: scores[o])
    # Evidence comes from points with a plausible range: a non-zero value inside it counts one, a zero
    # (an unused register reads zero on many devices) half, a value outside it or a refusal nothing.
    evidence = [pt for pt in profile.points if pt.min is not None or pt.max is not None]
    matched = 0.0
    for pt, regs in readable:
        if pt.min is None and pt.max is None:
            continue
        b, w = best if pt.type.startswith("float") else (profile.byte_order_of(pt), profile.word_order_of(pt))
        value = _value(pt, regs, b, w)
        if plausible(pt, value):
            matched += 0.5 if value == 0.0 else 1.0
    total = len(evidence) or 1
    return Fingerprint(
        name,
        matched / total,
        matched,
        refused,
        best[0],
        best[1],
        best != (profile.byte_order, profile.word_order),
    )


def _names_match(ident: dict[str, str], profile: Profile) -> bool:
    product = ident.get("product", "").lower()
    model = profile.model.lower()
    return bool(product) and (product in model or model in product)


async def identify(
    client: ModbusClient,
    unit: int,
    timeout: float,
    found: FoundDevice,
    profiles: dict[str, Profile],
    use_fc43: bool = True,
) -> None:
    """Fill ``found`` with the device's identity and the best-fitting profile."""
    ident = await read_device_id(client, unit, timeout) if use_fc43 else None
    if ident:
        found.vendor, found.product = ident.get("vendor", ""), ident.get("product", "")
    cache = RegisterCache(client, unit, timeout)
    prints = [await fingerprint(cache, name, prof) for name, prof in profiles.items()]
    prints.sort(key=lambda f: (f.score, f.matched), reverse=True)
    found.candidates = [(f.profile, round(f.score, 2)) for f in prints[:3]]
    named = [f for f in prints if ident and _names_match(ident, profiles[f.profile])]
    chosen = named[0] if named else (prints[0] if prints and prints[0].score >= MATCH_THRESHOLD else None)
    if chosen is None:
        return
    found.profile = chosen.profile
    found.score = chosen.score
    found.identified_by = "device identification (43/14)" if named else "register fingerprint"
    found.byte_order, found.word_order = chosen.byte_order, chosen.word_order
    found.order_differs = chosen.order_differs


# -- the walk ---------------------------------------------------------------------------------------
class Progress:
    """A progress bar with the time left on a terminal; one line a minute otherwise."""

    def __init__(self, total: int, write: Callable[[str], None], tty: bool, every_s: float = 60.0) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.write = write
        self.tty = tty
        self.every_s = every_s
        self.started = time.monotonic()
        self._last = self.started

    def left_s(self) -> float:
        """Estimated seconds to go from the pace so far."""
        if not self.done:
            return math.nan
        return (time.monotonic() - self.started) / self.done * (self.total - self.done)

    def step(self, label: str) -> None:
        """One probe done."""
        self.done += 1
        now = time.monotonic()
        left = self.left_s()
        eta = "?" if math.isnan(left) else f"{int(left) // 60}:{int(left) % 60:02d}"
        pct = 100 * self.done // self.total
        if self.tty:
            bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
            self.write(f"\r[{bar}] {pct:3d}% {self.done}/{self.total} {label} ~{eta} ")
            if self.done == self.total:
                self.write("\n")
        elif now - self._last >= self.every_s or self.done == self.total:
            self._last = now
            self.write(f"{pct}% ({self.done}/{self.total}) {label}, ~{eta} left\n")


class Scanner:
    """Walks one line within the technician's bounds and identifies what answers."""

    def __init__(self, opts: ScanOptions, progress: Callable[[int], Progress] | None = None) -> None:
        self.opts = opts
        self.progress_factory = progress
        self.profiles = all_profiles()

    async def run(self) -> ScanResult:
        """Scan and return what was found."""
        opts = self.opts
        try:
            line = parse_port(opts.port, opts.bauds[0] if opts.bauds else 9600)
        except ValueError as exc:
            raise ConfigError("--port", [str(exc)]) from None
        framing = "rtu"
        if isinstance(line, TcpLine):
            framing = await detect_tcp_framing(line.host, line.port)
            if framing == "rtu":
                line = RtuOverTcpLine(
                    type="rtu-over-tcp",
                    host=line.host,
                    port=line.port,
                    baudrate=opts.bauds[0] if opts.bauds else 9600,
                )
        result = ScanResult(line, framing)
        if framing == "tcp":
            settings: list[tuple[int | None, str]] = [(None, "N")]
        elif isinstance(line, RtuOverTcpLine):
            settings = [(line.baudrate, "N")]  # the gateway sets the serial line's speed
            if len(opts.bauds) > 1:
                result.notes.append(
                    Message(
                        N_(
                            "The gateway sets the serial speed ({baud} baud assumed); walk other speeds "
                            "by changing the gateway's setting."
                        ),
                        {"baud": line.baudrate},
                    )
                )
        else:
            settings = [(b, par) for b in opts.bauds for par in opts.parities]
        progress = (self.progress_factory or (lambda n: Progress(n, lambda s: None, False)))(
            len(settings) * len(opts.units)
        )
        started = time.monotonic()
        for baud, parity in settings:
            await self._walk(result, baud, parity, progress)
        result.elapsed_s = time.monotonic() - started
        self._check_bauds(result)
        return result

    async def _walk(self, result: ScanResult, baud: int | None, parity: str, progress: Progress) -> None:
        opts = self.opts
        transport = build_transport(result.line, baud, parity)
        client = ModbusClient(transport, "tcp" if result.framing == "tcp" else "rtu")
        timeout = probe_timeout(baud, opts.margin_s) if baud else max(opts.margin_s * 4, 0.3)
        where = f"{baud} 8{parity}1" if baud else "TCP"
        await transport.open()
        try:
            if baud and not await self._quiet(transport, baud):
                result.problems.append(
                    Message(
                        N_(
                            "At {where} the line never goes quiet: a device keeps transmitting. Disconnect the "
                            "devices one at a time to find it (often a sensor in continuous-output mode)."
                        ),
                        {"where": where},
                    )
                )
                for _ in opts.units:
                    progress.step(where)
                return
            for unit in opts.units:
                await self._probe(result, client, unit, baud, parity, timeout)
                progress.step(f"{where} unit {unit}")
        finally:
            await transport.close()

    async def _quiet(self, transport: Transport, baud: int, limit_s: float = 1.0) -> bool:
        """True once the line has been silent for ten character times (within ``limit_s``)."""
        window = max(10 * char_time(baud), 0.02)
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            transport.reset_input()
            try:
                await transport.read(256, window)
            except DeviceTimeout:
                return True
        return False

    async def _probe(
        self,
        result: ScanResult,
        client: ModbusClient,
        unit: int,
        baud: int | None,
        parity: str,
        timeout: float,
    ) -> None:
        """Probe one unit: present (data or exception), silent, or garbled."""
        opts = self.opts
        garbled = 0
        answered = False
        for _attempt in range(3):
            result.probes += 1
            try:
                await client.read(unit, 3, 0, 1, timeout)
                answered = True
            except DeviceRefused as exc:
                answered = client.framing != "tcp" or exc.code not in GATEWAY_ABSENT
            except DeviceTimeout:
                answered = False
            except FrameError:
                garbled += 1
                continue
            break
        result.wire_limit_s += probe_wire_s(baud, opts.margin_s, answered or garbled > 0)
        if garbled == 3:
            result.problems.append(
                Message(
                    N_(
                        "Unit {unit} at {baud} baud answers garbled every time (bad CRC): two devices probably "
                        "share unit id {unit}. Give one of them another unit id, then scan again."
                    ),
                    {"unit": unit, "baud": baud or "TCP"},
                )
            )
            return
        if not answered:
            return
        found = FoundDevice(unit, baud, parity, result.framing)
        t0 = time.monotonic()
        await identify(client, unit, timeout, found, self.profiles, opts.identify)
        result.identify_s += time.monotonic() - t0
        result.devices.append(found)

    def run_sync(self) -> ScanResult:
        """Run to completion (blocking)."""
        return asyncio.run(self.run())

    def _merge_parities(self, result: ScanResult) -> None:
        """A unit answering at one speed under several parities is one device (many receivers take
        a frame with an unexpected parity bit): keep the first parity walked and say so."""
        seen: dict[tuple[int, int | None], FoundDevice] = {}
        kept: list[FoundDevice] = []
        for d in result.devices:
            first = seen.get((d.unit, d.baudrate))
            if first is None:
                seen[(d.unit, d.baudrate)] = d
                kept.append(d)
            else:
                result.notes.append(
                    Message(
                        N_(
                            "Unit {unit} at {baud} baud answers with parity {first} and {other}; proposed "
                            "with {first}: check the parity set in the device."
                        ),
                        {"unit": d.unit, "baud": d.baudrate, "first": first.parity, "other": d.parity},
                    )
                )
        result.devices = kept

    def _check_bauds(self, result: ScanResult) -> None:
        self._merge_parities(result)
        rates = sorted(
            {d.baudrate for d in result.devices if d.baudrate},
            key=lambda b: (-sum(1 for d in result.devices if d.baudrate == b), b),
        )
        if len(rates) > 1 and result.framing == "rtu":
            line_rate = rates[0]
            odd = [d for d in result.devices if d.baudrate != line_rate]
            result.problems.append(
                Message(
                    N_(
                        "Devices answer at more than one speed on this line ({rates} baud); the agent drives a "
                        "line at one speed. Set unit(s) {units} to {baud} baud (in the device's menu or "
                        "settings register), then scan again."
                    ),
                    {
                        "rates": ", ".join(str(r) for r in rates),
                        "units": ", ".join(str(d.unit) for d in odd),
                        "baud": line_rate,
                    },
                )
            )
        for d in result.devices:
            if d.profile is None:
                result.problems.append(
                    Message(
                        N_(
                            "Unit {unit} answers but matches no shipped profile (closest: {closest}); write a "
                            "profile for it (docs/device-profiles.md)."
                        ),
                        {
                            "unit": d.unit,
                            "closest": ", ".join(f"{n} {s:.0%}" for n, s in d.candidates) or "-",
                        },
                    )
                )
