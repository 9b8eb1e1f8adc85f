"""Reading any rig file: an agent rig (emulated devices, faults) or a traffic rig (``kind: sumo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hil.rig import Rig, parse_rig
from kernel.config_base import load_yaml
from kernel.kinds import KindRegistry


def load_any_rig(path: Path | str, kinds: KindRegistry | None = None) -> Any:
    """The validated rig of ``path``: :class:`hil.rig.Rig` or :class:`hil.sumo.rigfile.SumoRig`.

    :raises ConfigError: the file cannot be read or is not a valid rig (every problem, by path).
    """
    path = Path(path)
    data = load_yaml(path)
    if isinstance(data, dict) and data.get("kind") == "sumo":
        from hil.sumo.rigfile import parse_sumo_rig

        return parse_sumo_rig(data, str(path))
    rig: Rig = parse_rig(data, str(path), kinds)
    return rig
