"""Device kind ``system``: the board's own health (CPU temperature, load, disk free) as readings."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel.readings import Reading
from kernel.source import RunContext, Source

if TYPE_CHECKING:
    from agent.system_config import Config

CONFIG = "agent.system_config:Config"
"""The pydantic model of a device entry (:mod:`agent.system_config`), imported only to check a config."""

_THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


class SystemSource:
    """Samples the board's health every ``period_s`` seconds."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.name = cfg.name

    def sample(self, now: float) -> list[Reading]:
        """One set of readings."""
        out: list[Reading] = []
        usage = shutil.disk_usage(self.cfg.disk_path)
        out.append(Reading(self.name, "disk_free", round(usage.free / 2**20, 1), now, "MiB"))
        out.append(Reading(self.name, "load1", round(os.getloadavg()[0], 2), now, ""))
        try:
            milli = int(_THERMAL.read_text().strip())
            out.append(Reading(self.name, "cpu_temp", milli / 1000.0, now, "°C"))
        except (OSError, ValueError):
            pass
        return out

    async def run(self, ctx: RunContext) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            clock = ctx.clock.quality()
            readings = [
                Reading(r.device, r.point, r.value, r.ts, r.unit, clock=clock)
                for r in self.sample(ctx.clock.now())
            ]
            await ctx.sink.put(readings)
            next_at += self.cfg.period_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One source per system device."""
    return [SystemSource(c) for c in configs if c.enabled]


def __getattr__(name: str) -> Any:
    if name == "Config":  # the pydantic model, for the config check and older imports
        from agent.system_config import Config

        return Config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
