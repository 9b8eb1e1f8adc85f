"""Device kind ``gpio``: a bank of relay/PWM outputs and contact inputs on the board's header.

Outputs are read back from the pins and reported every ``report_period_s``; input edges become
EVENT readings as they happen. Controllers drive outputs through
the run's :class:`drivers.gpio.registry.GpioBanks` service (``set_relay``, ``set_duty``, ``read_back``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from drivers.gpio.bank import GpioBank
from drivers.gpio.config import GpioConfig
from drivers.gpio.factory import PinFactories, make_pin_factory
from drivers.gpio.registry import GpioBanks
from kernel.config_base import StrictModel
from kernel.readings import Reading
from kernel.source import RunContext, Source


class Config(GpioConfig, StrictModel):
    """A ``gpio`` device: the pins of one board."""

    driver: Literal["gpio"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    enabled: bool = True


class GpioSource:
    """Reports a bank's outputs and inputs periodically and forwards input events as they come."""

    def __init__(self, cfg: Config, factory: Any | None = None, ctx: RunContext | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.bank = GpioBank(
            cfg.name,
            cfg,
            factory if factory is not None else make_pin_factory(cfg.pin_factory),
            clock=ctx.clock if ctx else None,
            metrics=ctx.metrics if ctx else None,
        )

    async def run(self, ctx: RunContext) -> None:
        """Until cancelled: forward events, and report everything every ``report_period_s``."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Reading] = asyncio.Queue(self.cfg.event_queue)
        self.bank.clock, self.bank.metrics = ctx.clock, ctx.metrics
        self.bank.attach(loop, queue)
        next_report = loop.time()
        try:
            while True:
                if loop.time() >= next_report:
                    await ctx.sink.put(self.bank.snapshot())
                    next_report += self.cfg.report_period_s
                try:
                    first = await asyncio.wait_for(queue.get(), max(0.0, next_report - loop.time()))
                except asyncio.TimeoutError:
                    continue
                batch = [first]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                await ctx.sink.put(batch)
        finally:
            self.bank.detach()


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One source per gpio device; each bank is registered for the controllers."""
    sources: list[Source] = []
    for cfg in configs:
        if not cfg.enabled:
            continue
        src = GpioSource(cfg, ctx.services.get(PinFactories).get(cfg.pin_factory), ctx=ctx)
        GpioBanks.of(ctx).register(src.bank)
        sources.append(src)
    return sources
