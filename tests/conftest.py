"""Shared helpers: free ports and the environment for running ``edge-agent`` in a subprocess.

A private Mosquitto per test is in :mod:`tests.brokers`."""

from __future__ import annotations

# One implementation for tests and rigs: free ports and running `edge-agent` from this checkout.
from hil.procs import REPO, agent_argv, free_port
from hil.procs import agent_env as _agent_env

__all__ = ["REPO", "agent_argv", "agent_env", "free_port"]


def agent_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m agent`` from this checkout in a subprocess."""
    env = _agent_env()
    env.update(extra)
    return env

