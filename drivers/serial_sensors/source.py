"""The acquisition loop shared by streaming serial sensors: bytes in, frames out, readings stored.

One source owns one port. It reads whatever arrives, feeds the device's framer, hands each valid
frame to the device (:meth:`SerialSensorSource.on_frame`), and once per ``period_s`` asks it for the
readings to store (:meth:`SerialSensorSource.on_period`). Bad frames are counted in the metrics and
never stop the loop; a sensor that falls silent is reported offline (an EVENT reading), set up
again (:meth:`SerialSensorSource.on_open`: wake, mode) every silence limit while it stays silent,
and reported online when frames return. Only a transport failure ends ``run`` (the supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from typing import Any, Protocol

from drivers.serial_sensors.config import SerialSensorConfig
from drivers.serial_sensors.framing import FrameStats, publish_delta
from drivers.transports.base import Transport
from kernel.errors import DeviceTimeout
from kernel.readings import Priority, Reading
from kernel.source import RunContext


class Framer(Protocol):
    """What the loop needs from a device's framer."""

    stats: FrameStats

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return the frames they complete."""
        ...


class SerialSensorSource(ABC):
    """Base of the PMS, SDS011 and NMEA sources. Subclasses supply the framer and the device logic."""

    def __init__(self, cfg: SerialSensorConfig, transport: Transport | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._transport = transport
        self.framer = self.make_framer()
        self.online = False
        self.last_frame_at = -1e18
        self.outbox: list[bytes] = []  # commands on_frame wants sent, written by the loop

    @abstractmethod
    def make_framer(self) -> Framer:
        """A fresh framer for this device."""

    async def on_open(self, transport: Transport, ctx: RunContext) -> None:
        """Put the device in the wanted mode once the port is open (default: nothing)."""
        return

    @abstractmethod
    def on_frame(self, frame: Any, ctx: RunContext) -> list[Reading]:
        """Take one valid frame; return readings to store now (events), usually none."""

    @abstractmethod
    async def on_period(self, transport: Transport, ctx: RunContext) -> list[Reading]:
        """Once per period: readings to store, and any request the device needs."""

    def silence_limit(self) -> float:
        """Seconds without a valid frame before the sensor counts as offline."""
        return self.cfg.silence_s

    def transport(self) -> Transport:
        """The transport given at construction, else the one the line config builds."""
        return self._transport if self._transport is not None else self.cfg.line.build()

    def _status(self, online: bool, ctx: RunContext) -> Reading:
        self.online = online
        ctx.metrics.set("kbe_serial_online", 1.0 if online else 0.0, {"device": self.name})
        return Reading(
            self.name, "online", online, ctx.clock.now(), priority=Priority.EVENT, clock=ctx.clock.quality()
        )

    async def run(self, ctx: RunContext) -> None:
        """Acquire until cancelled; raises only when the transport fails."""
        transport = self.transport()
        await transport.open()
        try:
            await self.on_open(transport, ctx)
            await self._loop(transport, ctx)
        finally:
            await transport.close()

    async def _loop(self, transport: Transport, ctx: RunContext) -> None:
        loop = asyncio.get_running_loop()
        next_period = loop.time() + self.cfg.period_s
        self.last_frame_at = kicked_at = time.monotonic()
        while True:
            wait = max(0.01, min(next_period - loop.time(), self.silence_limit()))
            data = b""
            try:
                data = await transport.read(4096, wait)
            except DeviceTimeout:
                pass
            out: list[Reading] = []
            if data:
                before = self.framer.stats.snapshot()
                frames = self.framer.feed(data)
                publish_delta(ctx.metrics, self.name, before, self.framer.stats)
                if frames:
                    self.last_frame_at = time.monotonic()
                    if not self.online:
                        out.append(self._status(True, ctx))
                for frame in frames:
                    out.extend(self.on_frame(frame, ctx))
            while self.outbox:
                await transport.write(self.outbox.pop(0))
            now = time.monotonic()
            if now - self.last_frame_at > self.silence_limit():
                if self.online:
                    ctx.log.warning("%s: no valid frame for %.0f s", self.name, self.silence_limit())
                    out.append(self._status(False, ctx))
                if now - kicked_at > self.silence_limit():
                    # Asleep, in the wrong mode, or power-cycled into its defaults: set it up again.
                    kicked_at = now
                    ctx.metrics.inc("kbe_serial_reinit_total", labels={"device": self.name})
                    await self.on_open(transport, ctx)
            if loop.time() >= next_period:
                out.extend(await self.on_period(transport, ctx))
                next_period += self.cfg.period_s
                if next_period < loop.time():
                    next_period = loop.time() + self.cfg.period_s
            if out:
                await ctx.sink.put(out)


def mean_readings(
    device: str, sums: dict[str, float], count: int, units: dict[str, str], ctx: RunContext, digits: int = 1
) -> list[Reading]:
    """Readings holding the mean of each summed point over ``count`` frames (none when count is 0)."""
    if not count:
        return []
    now, clock = ctx.clock.now(), ctx.clock.quality()
    meta = {"frames": str(count)}
    return [
        Reading(device, p, round(s / count, digits), now, units.get(p, ""), clock=clock, meta=meta)
        for p, s in sums.items()
    ]
