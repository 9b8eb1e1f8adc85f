"""The receiver's ``--sites`` file as pydantic models (the centre's side; the agent never reads it)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from kernel.config_base import StrictModel


class SiteEntry(StrictModel):
    """One site in the registry: its public keys (more than one while a key is being rotated)."""

    public_keys: list[Path] = Field(min_length=1)
    groups: list[str] = Field(
        default_factory=list, description="Groups the centre tools address together (canary, a district)."
    )


class RegistryFile(StrictModel):
    """The receiver's ``--sites`` file."""

    sites: dict[str, SiteEntry]
