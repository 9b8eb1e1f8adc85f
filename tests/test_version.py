"""kernel/version.py: the one place the installed version is read (build info, status, receiver)."""

from __future__ import annotations

import importlib.metadata

import pytest

from kernel import version as kv
from kernel.version import agent_version


def test_the_installed_distribution_version() -> None:
    assert agent_version() == importlib.metadata.version("kinhbac-edge")


def test_empty_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(_name: str) -> str:
        raise importlib.metadata.PackageNotFoundError("kinhbac-edge")

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert kv.agent_version() == ""


def test_the_status_and_the_agent_use_it() -> None:
    import agent.app
    import sync.status

    assert sync.status.agent_version is agent_version
    assert agent.app.agent_version is agent_version
