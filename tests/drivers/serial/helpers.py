"""Running a serial sensor source against its emulator for a while (shared by the end-to-end tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kernel.clock import Clock
from kernel.metrics import Metrics
from kernel.readings import ClockQuality, Reading
from kernel.sink import ListSink
from kernel.source import RunContext


def make_ctx(clock: Clock | None = None) -> RunContext:
    """A context with a list sink and fresh metrics."""
    return RunContext(
        site=None, sink=ListSink(), clock=clock or Clock(override=ClockQuality.RTC), metrics=Metrics()
    )  # type: ignore[arg-type]


async def wait_for(ctx: RunContext, pred: Callable[[list[Reading]], bool], timeout: float) -> None:
    """Wait until ``pred(readings so far)`` holds; fail with what was stored if it does not in time."""
    sink: Any = ctx.sink
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred(sink.readings):
        if loop.time() > end:
            raise AssertionError(f"timed out; stored {[(r.point, r.value) for r in sink.readings][-20:]}")
        await asyncio.sleep(0.05)


async def run_source(source: Any, ctx: RunContext, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``source`` while ``body`` runs, then cancel it; re-raise anything the source raised."""
    task = asyncio.create_task(source.run(ctx))
    try:
        await body()
        if task.done():
            task.result()
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def points(ctx: RunContext, name: str) -> list[Reading]:
    """Stored readings of one point."""
    sink: Any = ctx.sink
    return [r for r in sink.readings if r.point == name]
