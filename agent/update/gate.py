"""The health gate: after a switch, the agent watches itself for the window the update names.

Healthy means, over the window: every device that polls (Modbus, serial sensors) keeps its poll
success rate, no supervised task restarts, the uplink is connected at the end and the store drains
(readings are acknowledged while any wait; the uplink gets ``uplink_grace_s`` past the window to
connect or see its first ack). A device failing early (after ``grace_s``, at least
three polls below the rate) ends the watch at once, so a broken config is rolled back quickly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

PollCounts = dict[str, tuple[float, float]]
"""device -> (successful polls, failed polls), cumulative."""


@dataclass(frozen=True)
class Uplink:
    """The uplink as the gate sees it."""

    connected: bool
    acked: int
    depth: int


class GateView(Protocol):
    """What the gate reads of the running agent."""

    def polled_devices(self) -> list[str]:
        """Enabled devices that are expected to poll."""
        ...

    def poll_counts(self) -> PollCounts:
        """Cumulative poll results per device."""
        ...

    def task_restarts(self) -> dict[str, tuple[int, str | None]]:
        """Restarts and last error of each supervised task."""
        ...

    def uplink(self) -> Uplink | None:
        """The uplink's state, or None when the site has no uplink."""
        ...


@dataclass(frozen=True)
class Verdict:
    """The gate's decision."""

    healthy: bool
    reason: str
    elapsed_s: float
    first_failure_s: float | None = None
    """When (into the watch) the first failed poll or task restart was seen."""


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of one watch."""

    watch_s: float
    min_success: float = 0.8
    grace_s: float = 5.0
    min_polls: int = 3
    step_s: float = 0.5
    uplink_grace_s: float = 15.0
    """After the window, how long the uplink may still take to connect or get its first ack."""


def _delta(now: PollCounts, start: PollCounts, device: str) -> tuple[float, float]:
    ok0, bad0 = start.get(device, (0.0, 0.0))
    ok1, bad1 = now.get(device, (0.0, 0.0))
    return ok1 - ok0, bad1 - bad0


def _device_problem(view: GateView, start: PollCounts, policy: GatePolicy, final: bool) -> str | None:
    now = view.poll_counts()
    for device in view.polled_devices():
        ok, bad = _delta(now, start, device)
        total = ok + bad
        if final and total == 0:
            return f"device {device} did not poll during the watch"
        if total >= (1 if final else policy.min_polls) and ok / total < policy.min_success:
            return (
                f"device {device}: {ok:.0f} of {total:.0f} polls succeeded "
                f"(needs {policy.min_success:.0%})"
            )
    return None


def _restart_problem(view: GateView, start: dict[str, tuple[int, str | None]]) -> str | None:
    for name, (restarts, error) in view.task_restarts().items():
        if restarts > start.get(name, (0, None))[0]:
            return f"task {name} restarted ({error or 'no error recorded'})"
    return None


def _uplink_problem(view: GateView, start: Uplink | None) -> str | None:
    up = view.uplink()
    if up is None:
        return None
    if not up.connected:
        return "the uplink is not connected at the end of the watch"
    if up.depth > 0 and start is not None and up.acked <= start.acked:
        return f"the store is not draining ({up.depth} readings wait, none acknowledged during the watch)"
    return None


def _any_failure(view: GateView, start: PollCounts) -> bool:
    now = view.poll_counts()
    return any(_delta(now, start, d)[1] > 0 for d in view.polled_devices())


async def watch(view: GateView, policy: GatePolicy) -> Verdict:
    """Watch for ``policy.watch_s`` (monotonic); return as soon as the site is clearly unhealthy."""
    t0 = time.monotonic()
    polls0, tasks0, up0 = view.poll_counts(), view.task_restarts(), view.uplink()
    first: float | None = None
    while True:
        elapsed = time.monotonic() - t0
        final = elapsed >= policy.watch_s
        problem = _restart_problem(view, tasks0)
        if first is None and (problem is not None or _any_failure(view, polls0)):
            first = elapsed
        if problem is None and (final or elapsed >= policy.grace_s):
            problem = _device_problem(view, polls0, policy, final)
        if problem is None and final:
            problem = _uplink_problem(view, up0)
            # A restart resends what was in flight: on a slow link the first ack may come a little
            # after a short window. Wait for it (still watching for restarts), not longer.
            if problem is not None and elapsed < policy.watch_s + policy.uplink_grace_s:
                await asyncio.sleep(policy.step_s)
                continue
        if problem is not None:
            return Verdict(False, problem, elapsed, first)
        if final:
            return Verdict(True, f"healthy for {elapsed:.0f} s", elapsed, first)
        await asyncio.sleep(min(policy.step_s, max(0.01, policy.watch_s - elapsed)))
