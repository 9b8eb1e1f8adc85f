"""Shared fixtures: free ports, subprocess environment, a private Mosquitto per test."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m agent`` from this checkout in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def agent_argv(*args: str) -> list[str]:
    """argv that runs ``edge-agent`` with this interpreter."""
    return [sys.executable, "-m", "agent", *args]


@pytest.fixture
def tmp_store_path(tmp_path: Path) -> Path:
    """A path for a fresh SQLite store file."""
    return tmp_path / "store.db"
