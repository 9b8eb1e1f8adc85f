"""Shared helpers: free ports and the environment for running ``edge-agent`` in a subprocess.

A private Mosquitto per test is in :mod:`tests.brokers`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hypothesis import HealthCheck, settings

# One implementation for tests and rigs: free ports and running `edge-agent` from this checkout.
from hil.procs import REPO, agent_argv, free_port
from hil.procs import agent_env as _agent_env

__all__ = ["REPO", "agent_argv", "agent_env", "free_port", "until"]

# The suite runs on small, shared machines (CI, a developer's laptop beside a bench): property tests
# judge results, never how long one example took.
settings.register_profile("kbe", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kbe")


def agent_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m agent`` from this checkout in a subprocess."""
    env = _agent_env()
    env.update(extra)
    return env



async def until(cond: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Wait until ``cond()`` holds; fail naming ``what`` after ``timeout`` seconds.

    The deadline is generous on purpose: on a loaded machine everything runs slower together, and
    a test judges what happens, not how fast.
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.02)
