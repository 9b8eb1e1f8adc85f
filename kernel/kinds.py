"""The registry of device kinds.

Each kind is a module that defines ``Config`` (a pydantic model whose ``driver`` field is a
``Literal`` naming the kind) and ``build_sources(configs, ctx) -> list[Source]``. A kind groups its
devices as it needs: Modbus builds one source per physical bus, a serial sensor one per port.
"""

from __future__ import annotations

import importlib
from types import ModuleType

DEVICE_KINDS: dict[str, str] = {
    "system": "agent.system_source",
    "modbus": "drivers.modbus.kind",
    "gpio": "drivers.gpio.driver",
    "pms": "drivers.pms.driver",
    "sds011": "drivers.sds011.driver",
    "nmea_gps": "drivers.nmea.driver",
    "lighting": "control.lighting.kind",
    "traffic": "control.traffic.kind",
    "camera": "models.camera.kind",
    "farm": "models.farm.source",
}


def kind_module(kind: str) -> ModuleType:
    """Import the module that implements a device kind."""
    return importlib.import_module(DEVICE_KINDS[kind])
