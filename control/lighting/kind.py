"""Device kind ``lighting``: runs the site's street-lighting controller as a supervised source.

The device entry only names the controller (``{driver: lighting, name: street-lights}``); what it
controls is the site config's top-level ``lighting`` section. Three tasks run side by side so that
none can stall another: control (every ``tick_s``), metering (every ``meter_period_s``) and reporting
(hands readings to the sink through a bounded buffer; control never waits on the store or network).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from control.config_base import ControllerDeviceConfig
from control.lighting.astro import AstroClock
from control.lighting.config import LightingConfig, OutputConfig
from control.lighting.controller import LightingController
from control.lighting.meter import CircuitMeter, SdmMeter
from control.lighting.outputs import (
    BankLightingOutput,
    GpioLightingOutput,
    LightingOutput,
    ModbusLightingOutput,
)
from control.lighting.photocell import BankPhotocell, GpioPhotocell, LightSensor, ModbusLuxSensor
from control.lighting.state import LightingState, state_file
from drivers.gpio.factory import FactoryName, PinFactories
from drivers.gpio.registry import GpioBanks
from drivers.modbus.link import ModbusLink
from kernel.commands import Answer, CommandOutcome
from kernel.errors import ConfigError
from kernel.readings import Priority, Reading
from kernel.source import RunContext, Source

log = logging.getLogger("kbe.lighting")
COMMANDS_MAX = 32  # centre commands waiting for the control task


class Config(ControllerDeviceConfig):
    """The lighting controller as a device; its model is the top-level ``lighting`` section."""

    driver: Literal["lighting"]
    buffer_readings: int = Field(
        default=10_000, ge=100, le=1_000_000, description="Readings held for the sink when the store is slow."
    )
    pin_factory: FactoryName = Field(
        default="auto",
        description="For outputs of type gpio and a gpio_photocell: as the gpio kind (auto: $KBE_GPIO_PIN_FACTORY).",
    )


class ReadingBuffer:
    """A bounded buffer between control and the sink: when full, the oldest telemetry goes first.

    Alarms and events are dropped only if the buffer holds nothing else.
    """

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self.items: collections.deque[Reading] = collections.deque()
        self.dropped = 0
        self.ready = asyncio.Event()

    def extend(self, readings: Sequence[Reading]) -> None:
        """Add readings, making room as needed."""
        for r in readings:
            if len(self.items) >= self.maxlen:
                self._drop_one()
            self.items.append(r)
        if self.items:
            self.ready.set()

    def _drop_one(self) -> None:
        for i, r in enumerate(self.items):
            if r.priority == Priority.TELEMETRY:
                del self.items[i]
                self.dropped += 1
                return
        self.items.popleft()
        self.dropped += 1

    def take(self, n: int = 500) -> list[Reading]:
        """Up to ``n`` readings, oldest first."""
        out = [self.items.popleft() for _ in range(min(n, len(self.items)))]
        if not self.items:
            self.ready.clear()
        return out


def _gpio_output(cfg: LightingConfig, o: OutputConfig, pin_factory: Any, banks: GpioBanks) -> LightingOutput:
    return GpioLightingOutput(o, cfg.default_light_state, pin_factory)


def _bank_output(cfg: LightingConfig, o: OutputConfig, pin_factory: Any, banks: GpioBanks) -> LightingOutput:
    return BankLightingOutput(o, banks)


def _modbus_output(cfg: LightingConfig, o: OutputConfig, pin_factory: Any, banks: GpioBanks) -> LightingOutput:
    return ModbusLightingOutput(o, ModbusLink.tcp(str(o.host), o.port, o.unit, o.timeout_s))


OUTPUTS: Mapping[str, Callable[[LightingConfig, OutputConfig, Any, GpioBanks], LightingOutput]] = {
    "gpio": _gpio_output,
    "gpio_bank": _bank_output,
    "modbus": _modbus_output,
}
"""Circuit outputs by ``output.type``: chosen once, when the controller is built."""


def build_outputs(
    cfg: LightingConfig, pin_factory: Any = None, banks: GpioBanks | None = None
) -> dict[str, LightingOutput]:
    """One output per circuit; GPIO outputs start in the default light state; ``banks``: the run's gpio banks."""
    outputs: dict[str, LightingOutput] = {}
    try:
        for c in cfg.circuits:
            outputs[c.name] = OUTPUTS[c.output.type](
                cfg, c.output, pin_factory, banks if banks is not None else GpioBanks()
            )
    except Exception:
        for out in outputs.values():
            if isinstance(out, GpioLightingOutput):  # pins are claimed at once; links open on first use
                out._close_all()
        raise
    return outputs


def build_meters(cfg: LightingConfig) -> dict[str, CircuitMeter]:
    """One SDM meter per circuit that has a meter."""
    meters: dict[str, CircuitMeter] = {}
    for c in cfg.circuits:
        m = c.meter
        if m is not None:
            meters[c.name] = SdmMeter(m, ModbusLink.tcp(m.host, m.port, m.unit, m.timeout_s))
    return meters


class LightingSource:
    """The lighting controller inside the agent runtime."""

    def __init__(
        self,
        cfg: Config,
        lighting: LightingConfig,
        lat: float,
        lon: float,
        tz: str,
        pin_factory: Any = None,
        elevation_m: float = 0.0,
    ) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.lighting = lighting
        self.astro = AstroClock(lat, lon, tz, lighting.astro, elevation_m)
        self.pin_factory = pin_factory
        self.controller: LightingController | None = None
        self.buffer = ReadingBuffer(cfg.buffer_readings)
        self._wake = asyncio.Event()
        self._inbox: collections.deque[tuple[object, asyncio.Future[CommandOutcome]]] = collections.deque()
        self._now: Callable[[], float] = time.time
        self.last_step_mono: float | None = None

    def apply_command(self, body: object) -> Answer:
        """Hand a centre command (see control.lighting.commands) to the control task, which applies it
        between two steps and answers; the outputs follow in the same step."""
        if self.controller is None:
            return CommandOutcome.refused("the lighting controller is not running yet")
        if len(self._inbox) >= COMMANDS_MAX:
            return CommandOutcome.refused(f"{COMMANDS_MAX} lighting commands are waiting; try again")
        fut: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
        self._inbox.append((body, fut))
        self._wake.set()
        return fut

    def _take_commands(self, ctl: LightingController | None) -> None:
        """Apply (in the control task) and answer every command handed over so far."""
        while self._inbox:
            body, fut = self._inbox.popleft()
            if fut.done():
                continue
            if ctl is None:
                fut.set_result(CommandOutcome.refused("the lighting controller is stopping"))
            else:
                try:
                    fut.set_result(ctl.apply_command(body, self._now()))
                except Exception as exc:  # the router answers 'failed'
                    fut.set_exception(exc)

    def stalled(self, now_mono: float) -> str | None:
        """Why the control task looks hung (no step for 5 ticks and 60 s), else None."""
        last = self.last_step_mono
        limit = max(60.0, 5 * self.lighting.tick_s)
        if self.controller is not None and last is not None and now_mono - last > limit:
            return f"lighting {self.name}: no control step for {now_mono - last:.0f} s"
        return None

    def _factory(self, ctx: RunContext) -> Any:
        """The pin factory for own-pin outputs (from the run's pin factories); None when nothing uses own pins."""
        pc = self.lighting.photocell
        own = any(c.output.type == "gpio" for c in self.lighting.circuits) or (
            pc is not None and pc.type == "gpio_photocell"
        )
        if self.pin_factory is not None or not own:
            return self.pin_factory
        return ctx.services.get(PinFactories).get(self.cfg.pin_factory)

    def _build(self, ctx: RunContext) -> LightingController:
        self.pin_factory = self._factory(ctx)
        banks = GpioBanks.of(ctx)
        outputs = build_outputs(self.lighting, self.pin_factory, banks)
        sensor: LightSensor | None = None
        pc = self.lighting.photocell
        if pc is not None:
            if pc.type == "gpio_bank":
                sensor = BankPhotocell(pc, banks)
            elif pc.type == "modbus_lux":
                sensor = ModbusLuxSensor(pc, ModbusLink.tcp(str(pc.host), pc.port, pc.unit, pc.timeout_s))
            else:
                sensor = GpioPhotocell(pc, self.pin_factory)
        store = getattr(ctx.site, "store", None)
        path = state_file(self.lighting.state_path, Path(store.path) if store is not None else None)
        return LightingController(
            self.name, self.lighting, self.astro, outputs, build_meters(self.lighting), sensor,
            LightingState.load(path),
        )

    async def _control(self, ctx: RunContext, ctl: LightingController) -> None:
        while True:
            self._wake.clear()
            self.last_step_mono = time.monotonic()
            self._take_commands(ctl)
            self.buffer.extend(await ctl.step(ctx.clock.now(), time.monotonic(), ctx.clock.quality()))
            ctx.metrics.set("kbe_lighting_buffer", len(self.buffer.items), {"device": self.name})
            # asyncio.wait, not wait_for: on Python < 3.12 wait_for can swallow a cancellation that
            # races with its timeout, and then this loop would outlive the agent's shutdown.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter], timeout=self.lighting.tick_s)
            finally:
                waiter.cancel()

    async def _metering(self, ctx: RunContext, ctl: LightingController) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.buffer.extend(await ctl.sample_meters(ctx.clock.now(), ctx.clock.quality()))
            next_at += self.lighting.meter_period_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _report(self, ctx: RunContext) -> None:
        while True:
            await self.buffer.ready.wait()
            batch = self.buffer.take()
            if batch:
                await ctx.sink.put(batch)

    async def run(self, ctx: RunContext) -> None:
        """Control, metering and reporting until cancelled; pins and clients are released on the way out."""
        ctl = self._build(ctx)
        self._now = ctx.clock.now
        self.controller = ctl
        tasks = [
            asyncio.create_task(self._control(ctx, ctl), name=f"lighting[{self.name}].control"),
            asyncio.create_task(self._metering(ctx, ctl), name=f"lighting[{self.name}].metering"),
            asyncio.create_task(self._report(ctx), name=f"lighting[{self.name}].report"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            # Bounded: a driver call that swallowed its cancellation must not hold up the shutdown.
            await asyncio.wait(tasks, timeout=5.0)
            for t in tasks:
                if t.done() and not t.cancelled():
                    t.exception()  # retrieved here; the first failure was re-raised above
            self.controller = None
            self._take_commands(None)
            await ctl.close()


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """The lighting controller (at most one per site) when the site has a ``lighting`` section."""
    lighting: LightingConfig | None = getattr(ctx.site, "lighting", None)
    enabled = [c for c in configs if c.enabled]
    if not enabled:
        return []
    if lighting is None:
        raise ConfigError(
            "<config>", [f"devices: lighting device {enabled[0].name!r} needs a top-level lighting section"]
        )
    loc = ctx.site.site.location
    return [
        LightingSource(
            enabled[0], lighting, loc.lat, loc.lon, ctx.site.site.timezone, elevation_m=loc.elevation_m
        )
    ]
