"""Device kind ``modbus``: site-config entries and the sources built from them (one per physical bus).

Example entry::

    - driver: modbus
      name: meter-main
      profile: eastron-sdm120          # a shipped profile, or a path to a YAML file
      unit: 1
      line: {type: serial, port: /dev/ttyUSB0, baudrate: 9600, parity: N}
      poll: {fast_s: 1, slow_s: 60}
      overrides: {voltage: {min: 180, max: 260}}

Devices whose ``line`` names the same port (or host:port) share one bus and one scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from drivers.modbus.bus import ModbusBus
from drivers.modbus.device import ModbusDevice
from drivers.modbus.points import profile_path
from drivers.transports.lines import framing_of
from kernel.errors import ConfigError
from kernel.kinds import RigSupport
from kernel.source import RunContext, Source

if TYPE_CHECKING:
    from drivers.modbus.config import Config
    from drivers.modbus.profile import Profile

CONFIG = "drivers.modbus.config:Config"
"""The pydantic model of a device entry (:mod:`drivers.modbus.config`), imported only to check a config."""


_PROFILES: dict[str, Profile] = {}
"""Checked profiles by file path, loaded once per process (profiles are read-only files of the release)."""


def cached_profile(ref: str) -> Profile:
    """The profile ``ref`` names, loaded and checked once per process (pydantic is imported only to
    load one that the running agent was not handed with its config: :func:`remember_profiles`)."""
    path = str(profile_path(ref))
    profile = _PROFILES.get(path)
    if profile is None:
        from drivers.modbus.profile import load_profile

        profile = _PROFILES.setdefault(path, load_profile(path))
    return profile


def remember_profiles(profiles: Mapping[str, Profile]) -> None:
    """Profiles already checked, by file path (the running agent's, handed over with its config)."""
    _PROFILES.update(profiles)


def profile_ranges(options: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """The ranges of the points of ``options["profile"]`` that declare both min and max."""
    return {
        pt.name: (float(pt.min), float(pt.max))
        for pt in cached_profile(str(options["profile"])).points
        if pt.min is not None and pt.max is not None
    }


# For HIL rigs and the firmware suite: an emulated slave built from the device's profile.
RIG = RigSupport(
    emulator="drivers.modbus.emulator:EmulatedDevice",
    transport="modbus",
    ranges_for="drivers.modbus.kind:profile_ranges",
)


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One :class:`ModbusBus` per physical line; devices on a line must agree on its settings."""
    groups: dict[str, list[Config]] = {}
    for c in configs:
        if c.enabled:
            groups.setdefault(c.line.key(), []).append(c)
    sources: list[Source] = []
    for key, group in groups.items():
        first = group[0]
        units: dict[int, str] = {}
        for c in group:
            if c.line != first.line:
                raise ConfigError("devices", [f"{c.name}.line: {key} is set up differently by {first.name}"])
            if c.unit in units:
                raise ConfigError(
                    "devices", [f"{c.name}.unit: {c.unit} is already used by {units[c.unit]} on {key}"]
                )
            units[c.unit] = c.name
        devices = [ModbusDevice(cached_profile(c.profile), c.settings()) for c in group]
        extra = max(c.extra_silence_ms for c in group) / 1000.0
        outstanding = first.line.max_outstanding if first.line.type == "tcp" else 1
        sources.append(
            ModbusBus(key, first.line.build(), devices, framing_of(first.line), extra, max_outstanding=outstanding)
        )
    return sources


def __getattr__(name: str) -> Any:
    if name == "Config":  # the pydantic model, for the config check and older imports
        from drivers.modbus.config import Config

        return Config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
