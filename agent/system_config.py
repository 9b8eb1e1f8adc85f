"""The ``system`` device kind's entry in a site config (pydantic), validated before the agent starts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from kernel.config_base import StrictModel


class Config(StrictModel):
    """The board itself as a device."""

    driver: Literal["system"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    enabled: bool = True
    period_s: float = Field(default=60.0, ge=1.0, le=86400)
    disk_path: Path = Path("/")


# The kind's module still serves this model (agent.system_source.Config, imported on demand): named there,
# its JSON Schema definition is what it was before the model moved out of the kind's module. Rebuilt
# here, so its annotations still resolve in this module.
Config.__module__ = "agent.system_source"
Config.model_rebuild(force=True)
