"""The registry of device kinds: each kind registers itself through a Python entry point.

A kind is declared in its distribution's ``pyproject.toml`` under the entry-point group
``kinhbac_edge.kinds``::

    [project.entry-points."kinhbac_edge.kinds"]
    pms = "drivers.pms.driver"

The entry point names a module (or an object that satisfies :class:`Kind`). A module is a kind when
it defines ``Config`` (a pydantic model whose ``driver`` field is a ``Literal`` naming the kind; or
``CONFIG``, a ``"module:attr"`` reference to it, so the running agent need not import pydantic) and
``build_sources(configs, ctx) -> list[Source]``; it may also define ``COMMAND_KINDS`` (the command
kinds its control loop takes from the centre) and ``RIG`` (a :class:`RigSupport`: its emulator and
its points' ranges, for HIL rigs and the firmware suite).

:class:`KindRegistry` reads the entry points (names only) when it is created and imports a kind only
when asked for it, so a site with two energy meters never imports the camera stack. It is a service:
the agent, the config loader, the schema command and the rigs are handed one, nothing global holds it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from kernel.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from kernel.source import RunContext, Source

GROUP = "kinhbac_edge.kinds"
DISTRIBUTION = "kinhbac-edge"

Ranges = Mapping[str, tuple[float, float]]


@dataclass(frozen=True)
class RigSupport:
    """How a HIL rig (or the firmware suite) emulates a device of this kind.

    ``emulator`` is a ``"module:attr"`` reference to the emulator's factory, beside the driver; it
    is imported only when a rig asks for it. ``transport`` says how the rig attaches the emulator:
    ``stream`` is a :class:`~drivers.serial_sensors.emulator.StreamEmulator` on its own pty,
    ``modbus`` an emulated slave on an emulated RTU line or TCP gateway.

    ``ranges`` are the points' plausible ranges (from the datasheet); when they depend on the
    device (a Modbus profile), ``ranges_for`` names a function ``(rig device options) -> ranges``.
    ``aliases`` are other names a rig file may use for the kind, ``site_fields`` what a generated
    site config adds to the device's entry, ``emulator_options`` what a rig passes the factory,
    ``readings_per_period`` how many readings a device stores each period (0: one per range), for a
    rig's expected rate.
    """

    emulator: str
    transport: Literal["stream", "modbus"] = "stream"
    ranges: Ranges = field(default_factory=dict)
    ranges_for: str = ""
    aliases: tuple[str, ...] = ()
    site_fields: Mapping[str, Any] = field(default_factory=dict)
    emulator_options: Mapping[str, Any] = field(default_factory=dict)
    readings_per_period: int = 0

    def emulator_factory(self) -> Any:
        """The emulator's factory (imported now)."""
        return load_ref(self.emulator)

    def point_ranges(self, options: Mapping[str, Any] | None = None) -> dict[str, tuple[float, float]]:
        """point -> (low, high) for a device with these rig options."""
        out = dict(self.ranges)
        if self.ranges_for:
            out.update(load_ref(self.ranges_for)(options or {}))
        return out


@runtime_checkable
class Kind(Protocol):
    """A device kind: its config model, how it builds sources, its commands and its emulator."""

    @property
    def name(self) -> str:
        """The value of ``driver`` in a site config."""
        ...

    @property
    def config(self) -> type[BaseModel]:
        """The pydantic model of one device of this kind."""
        ...

    @property
    def command_kinds(self) -> tuple[str, ...]:
        """Command kinds (``down/cmd/<kind>``) its sources take from the centre."""
        ...

    @property
    def rig(self) -> RigSupport | None:
        """Its emulator and point ranges, or None when rigs cannot emulate it."""
        ...

    def build_sources(self, configs: Sequence[Any], ctx: RunContext) -> list[Source]:
        """The supervised sources for every device of this kind (the kind decides how they share hardware)."""
        ...


@dataclass(frozen=True)
class ModuleKind:
    """A kind implemented by a module with ``Config`` and ``build_sources`` (and optionally more)."""

    name: str
    module: ModuleType

    @property
    def config(self) -> type[BaseModel]:
        """The module's ``Config``, or the model its ``CONFIG`` names (``"module:attr"``, imported now:
        a kind whose module leaves pydantic out names its model that way)."""
        ref = getattr(self.module, "CONFIG", None)
        model: type[BaseModel] = load_ref(ref) if isinstance(ref, str) else self.module.Config
        return model

    @property
    def command_kinds(self) -> tuple[str, ...]:
        """The module's ``COMMAND_KINDS`` (none by default)."""
        return tuple(getattr(self.module, "COMMAND_KINDS", ()))

    @property
    def rig(self) -> RigSupport | None:
        """The module's ``RIG`` (None by default)."""
        rig = getattr(self.module, "RIG", None)
        return rig if isinstance(rig, RigSupport) else None

    def build_sources(self, configs: Sequence[Any], ctx: RunContext) -> list[Source]:
        """The module's ``build_sources``."""
        result: list[Source] = self.module.build_sources(configs, ctx)
        return result


def load_ref(ref: str) -> Any:
    """Import ``"package.module:attr"`` (or a bare module) and return the object."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _checkout_entry_points() -> dict[str, str]:
    """Kinds declared by the source checkout this code runs from (its ``pyproject.toml``), if any.

    Running from a checkout whose installed metadata is older than its ``pyproject.toml`` (a new
    kind added since ``pip install -e``), the checkout's declarations are the ones that hold.
    """
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file() or sys.version_info < (3, 11):
        return {}
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    if data.get("project", {}).get("name") != DISTRIBUTION:
        return {}
    eps = data.get("project", {}).get("entry-points", {}).get(GROUP, {})
    return {str(k): str(v) for k, v in eps.items()}


def discover(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Kind name -> entry-point value, from the checkout and every installed distribution."""
    found = _checkout_entry_points()
    for ep in metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    found.update(extra or {})
    return found


class KindRegistry:
    """The device kinds this agent knows, imported one by one when first asked for."""

    def __init__(self, refs: Mapping[str, str] | None = None) -> None:
        """``refs`` maps kind names to entry-point values; by default they are discovered."""
        self._refs = dict(discover() if refs is None else refs)
        self._loaded: dict[str, Kind] = {}
        if not self._refs:
            raise ConfigError(
                "device kinds",
                [
                    f"no device kind is registered (entry-point group {GROUP!r}): install the "
                    f"{DISTRIBUTION} distribution (pip install -e . in a checkout)"
                ],
            )

    def names(self) -> list[str]:
        """Every registered kind, sorted (nothing is imported)."""
        return sorted(self._refs)

    def ref(self, name: str) -> str:
        """Where kind ``name`` is implemented (its entry point's value)."""
        return self._refs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._refs

    def get(self, name: str) -> Kind:
        """The kind ``name``, imported on first use.

        :raises KeyError: when no kind of that name is registered.
        :raises ConfigError: when its registration cannot be imported or is not a kind (one line).
        """
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        ref = self._refs[name]
        try:
            obj = load_ref(ref)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                "device kinds", [f"device kind {name!r} cannot be loaded from {ref}: {type(exc).__name__}: {exc}"]
            ) from exc
        kind: Any
        if isinstance(obj, ModuleType):
            kind = ModuleKind(name, obj)
            has_config = isinstance(getattr(obj, "CONFIG", None), str) or hasattr(obj, "Config")
            valid = has_config and callable(getattr(obj, "build_sources", None))
        else:
            kind, valid = obj, isinstance(obj, Kind)
        if not valid:
            raise ConfigError(
                "device kinds",
                [f"device kind {name!r} ({ref}) is not a kind: it needs Config and build_sources"],
            )
        self._loaded[name] = kind
        result: Kind = kind
        return result

    def all(self) -> list[Kind]:
        """Every kind, imported (the JSON Schema and rig tables need them all)."""
        return [self.get(name) for name in self.names()]

    def loaded(self) -> list[str]:
        """Kinds imported so far."""
        return sorted(self._loaded)

    def rig_kinds(self, transport: str | None = None) -> dict[str, Kind]:
        """Rig name (kind name or alias) -> kind, for kinds a rig can emulate (imports every kind)."""
        out: dict[str, Kind] = {}
        for kind in self.all():
            rig = kind.rig
            if rig is None or (transport is not None and rig.transport != transport):
                continue
            for alias in (kind.name, *rig.aliases):
                out[alias] = kind
        return out

    def rig_kind(self, name: str, transport: str | None = None) -> Kind:
        """The kind a rig file means by ``name`` (a kind or an alias); :class:`KeyError` naming the choices.

        A kind's own name is found without importing the others; an alias needs them all.
        """
        if name in self._refs:
            kind = self.get(name)
            if kind.rig is not None and (transport is None or kind.rig.transport == transport):
                return kind
        table = self.rig_kinds(transport)
        if name not in table:
            raise KeyError(f"{name!r} is not an emulated device kind (one of {', '.join(sorted(table))})")
        return table[name]

    def emulator(self, name: str, **options: Any) -> Any:
        """A new emulator for a device of kind ``name`` (``options`` go to its factory).

        :raises ValueError: when the kind has no emulator.
        """
        try:
            kind = self.rig_kind(name)
        except KeyError as exc:
            raise ValueError(f"no emulator for device kind {name!r}: {exc.args[0]}") from None
        assert kind.rig is not None
        return kind.rig.emulator_factory()(**options)

    def with_kinds(self, refs: Iterable[tuple[str, str]]) -> KindRegistry:
        """A new registry with these ``(name, entry-point value)`` added (tests, tools)."""
        return KindRegistry({**self._refs, **dict(refs)})
