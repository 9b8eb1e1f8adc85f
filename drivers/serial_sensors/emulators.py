"""The serial sensor emulators by device kind, for HIL rigs that name devices in YAML."""

from __future__ import annotations

from typing import Any

from drivers.serial_sensors.emulator import StreamEmulator


def emulator_for(kind: str, **options: Any) -> StreamEmulator:
    """A new emulator for device kind ``kind`` (``pms``, ``sds011``, ``nmea_gps``).

    ``options`` go to the emulator's constructor (for example ``pm2_5=80.0, fast=True``).
    """
    if kind == "pms":
        from drivers.pms.emulator import PmsEmulator

        return PmsEmulator(**options)
    if kind == "sds011":
        from drivers.sds011.emulator import Sds011Emulator

        return Sds011Emulator(**options)
    if kind == "nmea_gps":
        from drivers.nmea.emulator import NmeaEmulator

        return NmeaEmulator(**options)
    raise ValueError(f"no serial emulator for kind {kind!r} (have pms, sds011, nmea_gps)")
