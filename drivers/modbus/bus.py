"""One scheduler per physical bus: earliest-due poll first, one transaction at a time (or, on a
Modbus TCP line with ``max_outstanding`` above 1, that many pipelined, each for a different device).

A dead device costs the bus one timeout per backoff period (circuit breaker), so the others keep
their rate. Writes go through the same loop, ahead of polls, with read-back verification. A lost
transport is reopened with a growing delay. Unavailability and recovery are logged once each.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.modbus.client import Framing
from drivers.modbus.device import ModbusDevice
from drivers.modbus.link import ModbusLink
from drivers.modbus.pipeline import MbapPipeline
from drivers.modbus.plan import Block
from drivers.transports.base import Transport, with_timeout
from kernel.clock import Clock
from kernel.errors import DeviceError, DeviceRefused, DeviceTimeout, FrameError, TransportError
from kernel.metrics import Metrics
from kernel.pace import Pace
from kernel.readings import Reading, availability_event
from kernel.source import RunContext

if TYPE_CHECKING:
    from drivers.modbus.profile import Point

MAX_PENDING_WRITES = 32
METRIC_HELP = {
    "modbus_requests_total": "Modbus read requests sent, per device.",
    "modbus_errors_total": "Failed requests per device and kind (timeout, frame, exception_N).",
    "modbus_polls_total": "Polls per device and result (ok, failed).",
    "modbus_points_total": "Points read per device.",
    "modbus_device_online": "1 while the device answers, 0 while its circuit breaker is open.",
    "modbus_response_seconds": "Time of the device's last successful request.",
    "modbus_blocks_split_total": "Block reads split after an illegal-data-address refusal.",
    "modbus_transport_errors_total": "Transport failures (port or connection lost) per bus.",
    "modbus_writes_total": "Writes attempted per device.",
    "modbus_write_errors_total": "Writes refused by the device or failing read-back.",
    "modbus_polls_skipped_total": "Polls that fell due while the bus was busy and were merged into the next one, per bus.",
    "modbus_stale_answers_total": "Pipelined Modbus TCP answers nobody waited for (late, or a wrong transaction id), per bus.",
}
ILLEGAL_DATA_ADDRESS = 2


class _DeviceSeries:
    """A device's metric series, looked up once per run instead of once per request."""

    __slots__ = ("failed", "ok", "online", "points", "requests", "response")

    def __init__(self, metrics: Metrics, device: str) -> None:
        labels = {"device": device}
        self.requests = metrics.bound("counter", "modbus_requests_total", labels)
        self.ok = metrics.bound("counter", "modbus_polls_total", {**labels, "result": "ok"})
        self.failed = metrics.bound("counter", "modbus_polls_total", {**labels, "result": "failed"})
        self.points = metrics.bound("counter", "modbus_points_total", labels)
        self.online = metrics.bound("gauge", "modbus_device_online", labels)
        self.response = metrics.bound("histogram", "modbus_response_seconds", labels)


@dataclass
class _Write:
    device: ModbusDevice
    point: Point
    payload: list[int] | bool
    done: asyncio.Future[None]


class ModbusBus:
    """A :class:`~kernel.source.Source` polling every device on one RS-485 line or TCP endpoint."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        devices: Sequence[ModbusDevice],
        framing: Framing = "rtu",
        extra_silence_s: float = 0.0,
        reconnect_max_s: float = 30.0,
        max_outstanding: int = 1,
    ) -> None:
        if max_outstanding > 1 and framing != "tcp":
            raise ValueError("max_outstanding above 1 needs Modbus TCP framing (RTU has no transaction id)")
        self.name = name
        self.max_outstanding = max_outstanding
        self.transport = transport
        # The one async Modbus link; the scheduler reopens the line itself (with backoff).
        self.link = ModbusLink(transport, 0, 1.0, framing, extra_silence_s, owns_transport=False)
        self.client = self.link.client
        self.devices = {d.name: d for d in devices}
        self.reconnect_max_s = reconnect_max_s
        self._writes: deque[_Write] = deque()
        self._wake = asyncio.Event()
        self.metrics = Metrics()
        self.log = logging.getLogger(f"kbe.modbus.{name}")
        self.clock = Clock()
        self._transport_down = False
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._inflight: set[str] = set()  # devices a worker is polling (pipelined buses)
        self._series: dict[str, _DeviceSeries] = {}
        self.skipped = 0  # polls merged into late ones on this bus (also modbus_polls_skipped_total)
        self._count_skipped: Callable[[float], None] = lambda n: None
        self.pace = Pace()

    # -- Source ---------------------------------------------------------------------------------
    async def run(self, ctx: RunContext) -> None:
        """Poll until cancelled; reopen the transport whenever it fails."""
        self.metrics, self.log, self.clock = ctx.metrics, ctx.log.getChild(f"modbus.{self.name}"), ctx.clock
        for name, text in METRIC_HELP.items():
            self.metrics.describe(name, text)
        self._series = {name: _DeviceSeries(self.metrics, name) for name in self.devices}
        self.pace = ctx.pace
        skipped_series = self.metrics.bound("counter", "modbus_polls_skipped_total", {"bus": self.name})
        self._count_skipped = skipped_series.inc
        delay = 0.5
        try:
            while True:
                try:
                    await self.transport.open()
                    if self._transport_down:
                        self.log.info("bus %s: %s reopened", self.name, self.transport.name)
                        self._transport_down = False
                    delay = 0.5
                    await self._serve(ctx)
                except TransportError as exc:
                    self.metrics.inc("modbus_transport_errors_total", labels={"bus": self.name})
                    if not self._transport_down:
                        self.log.warning("bus %s: %s (reconnecting)", self.name, exc)
                        self._transport_down = True
                    await self.transport.close()
                    self._fail_writes(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.reconnect_max_s)
        finally:
            await self.transport.close()
            self._fail_writes(TransportError(f"bus {self.name} stopped"))

    async def _serve(self, ctx: RunContext) -> None:
        self._heap.clear()  # rebuilt from the devices' own schedules
        self._inflight.clear()
        if self.max_outstanding == 1:
            await self._worker(ctx)
            return
        stale = self.metrics.bound("counter", "modbus_stale_answers_total", {"bus": self.name})
        pipe = MbapPipeline(self.transport, self.max_outstanding, stale.inc)
        pipe.start()
        self.client.pipeline = pipe
        workers = [asyncio.ensure_future(self._worker(ctx)) for _ in range(self.max_outstanding)]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for w in done:
                w.result()  # a worker only ends by raising (a lost connection): re-raise it
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.client.pipeline = None
            await pipe.stop()

    async def _worker(self, ctx: RunContext) -> None:
        """Take the earliest due poll (or a waiting write), do it, repeat; one per outstanding slot."""
        pipelined = self.max_outstanding > 1
        while True:
            if self._writes:
                await self._do_write(self._writes.popleft())
                continue
            job = self._next()
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            due, dev, cls = job
            delay = due - time.monotonic()
            if delay > 0:
                self._wake.clear()
                try:
                    await with_timeout(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                continue
            heapq.heappop(self._heap)
            self._inflight.add(dev.name)
            try:
                readings = await self.poll(dev, cls)
            finally:
                self._inflight.discard(dev.name)
            nj = dev.next_job()
            if nj is not None:
                heapq.heappush(self._heap, (nj[0], next(self._seq), dev.name, nj[1]))
                if pipelined and self._heap[0][2] == dev.name:
                    self._wake.set()  # now due first: the other workers wait for something later
            if readings:
                await ctx.sink.put(readings)

    def _next(self) -> tuple[float, ModbusDevice, str] | None:
        """The device and class due first (a heap with lazy re-checks, O(log n) per poll)."""
        heap = self._heap
        if not heap and not self._inflight:
            for dev in self.devices.values():
                nj = dev.next_job()
                if nj is not None:
                    heapq.heappush(heap, (nj[0], next(self._seq), dev.name, nj[1]))
        while heap:
            due, _, name, cls = heap[0]
            dev = self.devices[name]
            nj = dev.next_job()
            if nj is None:
                heapq.heappop(heap)
                continue
            if nj[0] != due or nj[1] != cls:
                heapq.heapreplace(heap, (nj[0], next(self._seq), name, nj[1]))
                continue
            return due, dev, cls
        return None

    # -- polling --------------------------------------------------------------------------------
    def _series_of(self, dev: ModbusDevice) -> _DeviceSeries:
        series = self._series.get(dev.name)
        if series is None:  # polled before run() (a technician's one-shot read)
            series = self._series[dev.name] = _DeviceSeries(self.metrics, dev.name)
        return series

    async def poll(self, dev: ModbusDevice, cls: str) -> list[Reading]:
        """Read every block of ``dev``'s poll class once; update its breaker; return the readings."""
        labels = {"device": dev.name}
        series = self._series_of(dev)
        probing = dev.breaker_open
        readings: list[Reading] = []
        ok = True
        for block in list(dev.planner.plan(cls)):
            try:
                values = await self._read_block(dev, block, retries=0 if probing else dev.s.retries)
            except DeviceRefused as exc:
                if exc.code == ILLEGAL_DATA_ADDRESS:
                    aside = dev.planner.refuse(block)
                    self.metrics.inc("modbus_blocks_split_total", labels=labels)
                    if aside:
                        self.log.warning(
                            "%s: device refuses %s; set aside for an hour",
                            dev.name,
                            ", ".join(p.name for p in aside),
                        )
                    continue
                ok = False
                break
            except (DeviceTimeout, FrameError):
                ok = False
                break
            ts = self.clock.now()
            readings.extend(dev.decode(block, values, ts, self.clock.quality()))
        skipped = dev.skipped
        went, back = dev.polled(cls, ok, self.pace.stretch)
        if dev.skipped != skipped:
            self.skipped += dev.skipped - skipped
            self._count_skipped(dev.skipped - skipped)
        (series.ok if ok else series.failed).inc()
        series.online.set(1.0 if dev.online else 0.0)
        if went:
            self.log.warning("%s (unit %d on %s) is unavailable", dev.name, dev.unit, self.name)
        if back:
            self.log.info("%s (unit %d on %s) is available again", dev.name, dev.unit, self.name)
        if went or back:
            # An event the centre sees (signed in a batch like any reading), not only a local metric.
            readings.append(availability_event(dev.name, not went, self.clock.now(), self.clock.quality(),
                                               f"unit {dev.unit} on {self.name}"))  # fmt: skip
        series.points.inc(len(readings))
        return readings

    async def _read_block(self, dev: ModbusDevice, block: Block, retries: int) -> list[int] | list[bool]:
        labels = {"device": dev.name}
        series = self._series_of(dev)
        for attempt in range(retries + 1):
            t0 = time.monotonic()
            series.requests.inc()
            try:
                values = await self.link.read(
                    block.fc, block.address, block.count, unit=dev.unit, timeout_s=dev.s.timeout_s
                )
            except DeviceTimeout:
                self.metrics.inc("modbus_errors_total", labels={**labels, "kind": "timeout"})
                if attempt == retries:
                    raise
                continue
            except FrameError:
                self.metrics.inc("modbus_errors_total", labels={**labels, "kind": "frame"})
                if attempt == retries:
                    raise
                continue
            except DeviceRefused as exc:
                self.metrics.inc("modbus_errors_total", labels={**labels, "kind": f"exception_{exc.code}"})
                raise
            series.response.observe(time.monotonic() - t0)
            return values
        raise AssertionError("unreachable")

    # -- writes ---------------------------------------------------------------------------------
    async def write(
        self, device: str, point: str, value: float | int | bool | str, timeout: float = 30.0
    ) -> None:
        """Write ``value`` to ``device.point`` through this bus, then read it back and compare.

        Raises :class:`~kernel.errors.WriteRefused` before anything is sent when the profile says the
        point is not writable or the value does not fit, :class:`DeviceError` when the device
        refuses or the read-back differs.
        """
        dev = self.devices[device]
        p = dev.point(point)
        payload = dev.encode(p, value)
        if len(self._writes) >= MAX_PENDING_WRITES:
            raise DeviceError(f"bus {self.name}: {MAX_PENDING_WRITES} writes already waiting")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes.append(_Write(dev, p, payload, done))
        self._wake.set()
        await with_timeout(asyncio.shield(done), timeout)

    async def _do_write(self, w: _Write) -> None:
        dev, p = w.device, w.point
        labels = {"device": dev.name}
        try:
            self.metrics.inc("modbus_writes_total", labels=labels)
            if isinstance(w.payload, bool):
                await self.link.write_coil(p.address, w.payload, unit=dev.unit, timeout_s=dev.s.timeout_s)
                back = await self.link.read(1, p.address, 1, unit=dev.unit, timeout_s=dev.s.timeout_s)
                ok = bool(back[0]) == w.payload
            else:
                await self.link.write_registers(p.address, w.payload, unit=dev.unit, timeout_s=dev.s.timeout_s)
                back = await self.link.read(3, p.address, len(w.payload), unit=dev.unit, timeout_s=dev.s.timeout_s)
                ok = [int(v) for v in back] == w.payload
            if not ok:
                raise DeviceError(
                    f"{dev.name}.{p.name}: read-back {list(back)} differs from written {w.payload}"
                )
        except TransportError as exc:
            if not w.done.done():
                w.done.set_exception(exc)
            raise
        except DeviceError as exc:
            self.metrics.inc("modbus_write_errors_total", labels=labels)
            if not w.done.done():
                w.done.set_exception(exc)
            return
        if not w.done.done():
            w.done.set_result(None)

    def _fail_writes(self, exc: Exception) -> None:
        while self._writes:
            w = self._writes.popleft()
            if not w.done.done():
                w.done.set_exception(exc)
