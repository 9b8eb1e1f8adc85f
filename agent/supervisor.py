"""Supervised tasks: a source that raises is restarted with backoff, within a restart budget."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kernel.metrics import Metrics

log = logging.getLogger("kbe.supervisor")


@dataclass
class TaskState:
    """What the supervisor knows about one task (for /health)."""

    name: str
    state: str = "starting"  # running | backoff | cooling-down | stopped
    restarts: int = 0
    last_error: str | None = None
    started_mono: float = field(default_factory=time.monotonic)


class Supervisor:
    """Runs named coroutine factories; restarts failures, at most ``max_restarts`` per ``window_s``.

    A task that uses up its budget is not given up for good (a field device may come back): it
    cools down for ``window_s`` and gets a fresh budget, and its state says so meanwhile.
    """

    def __init__(
        self, metrics: Metrics, max_restarts: int = 5, window_s: float = 60.0, backoff_s: float = 1.0
    ):
        self.metrics = metrics
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.states: dict[str, TaskState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._probes: dict[str, Callable[[float], str | None]] = {}

    def start(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        probe: Callable[[float], str | None] | None = None,
    ) -> asyncio.Task[None]:
        """Start supervising ``factory()`` under ``name``; ``probe(now_mono)`` says why it is hung, if it is."""
        if probe is not None:
            self._probes[name] = probe
        state = TaskState(name)
        self.states[name] = state
        task = asyncio.create_task(self._supervise(name, factory, state), name=f"kbe:{name}")
        self._tasks[name] = task
        return task

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]], state: TaskState) -> None:
        failures: deque[float] = deque()
        backoff = self.backoff_s
        while True:
            state.state = "running"
            started = time.monotonic()
            try:
                await factory()
                log.warning("task %s returned; restarting", name)
                state.last_error = "returned"
            except asyncio.CancelledError:
                state.state = "stopped"
                raise
            except Exception as exc:
                state.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "task %s failed: %s", name, state.last_error, exc_info=log.isEnabledFor(logging.DEBUG)
                )
            self.metrics.inc("kbe_task_restarts_total", labels={"task": name})
            state.restarts += 1
            now = time.monotonic()
            if now - started > self.window_s:
                backoff = self.backoff_s  # it ran well for a while: start backoff afresh
            failures.append(now)
            while failures and now - failures[0] > self.window_s:
                failures.popleft()
            if len(failures) > self.max_restarts:
                state.state = "cooling-down"
                log.error(
                    "task %s failed %d times in %.0fs; cooling down", name, len(failures), self.window_s
                )
                await asyncio.sleep(self.window_s)
                failures.clear()
                backoff = self.backoff_s
                continue
            state.state = "backoff"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max(self.window_s / 2, self.backoff_s))

    async def cancel_matching(self, prefix: str) -> None:
        """Cancel the tasks whose names start with ``prefix`` and wait for them."""
        tasks = [t for name, t in self._tasks.items() if name.startswith(prefix)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every task and wait for them."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def stalled(self, now_mono: float | None = None) -> list[str]:
        """Why some supervised task is not alive: its supervision ended, or its probe says it is hung."""
        now = time.monotonic() if now_mono is None else now_mono
        out = [f"{name}: not supervised any more" for name, t in self._tasks.items() if t.done()]
        for name, probe in self._probes.items():
            task = self._tasks.get(name)
            if task is None or task.done():
                continue
            try:
                why = probe(now)
            except Exception as exc:  # a probe that fails cannot vouch for its task
                why = f"{name}: liveness probe failed: {type(exc).__name__}: {exc}"
            if why:
                out.append(why)
        return out

    def healthy(self) -> bool:
        """True when no task is cooling down after using up its budget."""
        return all(s.state != "cooling-down" for s in self.states.values())
