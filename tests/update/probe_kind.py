"""Device kind ``probe``, known only to a registry a test builds: no entry point declares it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from kernel.config_base import StrictModel
from kernel.source import Source


class Config(StrictModel):
    """A probe: a name and nothing else."""

    driver: Literal["probe"]
    name: str


def build_sources(configs: Sequence[Config], ctx: Any) -> list[Source]:
    """No sources: the tests only read configs naming it."""
    return []
