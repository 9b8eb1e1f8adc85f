"""The site configuration: one YAML file per site, validated by pydantic before anything starts."""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from kernel.config_base import (
    RelPath,
    StrictModel,
    load_yaml,
    validation_problems,
)
from kernel.errors import ConfigError
from kernel.i18n import tr
from kernel.kinds import KindRegistry
from kernel.site import NAME_PATTERN
from kernel.site_config import SiteInfo
from sync.config import StoreConfig, SyncConfig

if TYPE_CHECKING:
    from agent.localpage.config import LocalPageConfig
    from control.lighting.config import LightingConfig
    from control.traffic.config import TrafficConfig
    from models.config import InferenceConfig


class DeviceConfigBase(StrictModel):
    """Fields every device has, whatever its kind."""

    driver: str
    name: str = Field(pattern=NAME_PATTERN, description="Unique device name within the site.")
    enabled: bool = True


@functools.cache
def _device_adapter(model: type) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def _kinds_of(info: ValidationInfo) -> KindRegistry:
    kinds = (info.context or {}).get("kinds")
    return kinds if isinstance(kinds, KindRegistry) else KindRegistry()


def _validate_devices(value: Any, info: ValidationInfo) -> list[Any]:
    """Validate each device against its own kind only, importing only the kinds the site uses.

    A Raspberry Pi running two energy meters never imports OpenCV or the camera pipeline. Problems
    come back one a line as ``[i].path: message``, which the error formatter joins to ``devices``.
    """
    if not isinstance(value, list):
        raise ValueError(f"must be a list of devices, not {type(value).__name__}")
    devices: list[Any] = []
    problems: list[str] = []
    kinds = _kinds_of(info)
    known = ", ".join(kinds.names())
    for i, item in enumerate(value):
        if isinstance(item, DeviceConfigBase):
            devices.append(item)
            continue
        if not isinstance(item, dict):
            problems.append(f"[{i}]: a device is a mapping with at least driver and name")
            continue
        kind = item.get("driver")
        if not isinstance(kind, str) or kind not in kinds:
            problems.append(f"[{i}].driver: {kind!r} is not a known device kind (one of {known})")
            continue
        try:
            model = kinds.get(kind).config
        except ConfigError as exc:  # a registered kind that cannot be imported
            problems.extend(f"[{i}].driver: {p}" for p in exc.problems)
            continue
        try:
            devices.append(_device_adapter(model).validate_python(item, context=info.context))
        except ValidationError as exc:
            problems.extend(f"[{i}]{'' if p.startswith('[') else '.'}{p}" for p in validation_problems(exc))
    if problems:
        raise ValueError("\n".join(problems))
    return devices


if TYPE_CHECKING:
    DeviceList = list[DeviceConfigBase]
else:
    DeviceList = Annotated[list[Any], BeforeValidator(_validate_devices)]


def _schema_device_list(kinds: KindRegistry) -> Any:
    """A list of any kind's config, for the JSON Schema only (imports every kind)."""
    classes = tuple(kind.config for kind in kinds.all())
    return list[Annotated[Union[classes], Field(discriminator="driver")]]  # type: ignore[valid-type]


# Sections most sites leave out: their models are imported only when a site has the section.
_SECTIONS = {
    "lighting": ("control.lighting.config", "LightingConfig"),
    "traffic": ("control.traffic.config", "TrafficConfig"),
    "local_page": ("agent.localpage.config", "LocalPageConfig"),
    "inference": ("models.config", "InferenceConfig"),
}


def _section_model(field: str) -> type:
    module, name = _SECTIONS[field]
    model = getattr(importlib.import_module(module), name)
    assert isinstance(model, type)
    return model


def _validate_section(value: Any, info: ValidationInfo) -> Any:
    """Validate an optional section against its model, imported now; problems as ``path: message`` lines."""
    if value is None:
        return None
    assert info.field_name is not None
    model = _section_model(info.field_name)
    if isinstance(value, model):
        return value
    try:
        return _device_adapter(model).validate_python(value, context=info.context)
    except ValidationError as exc:
        raise ValueError("\n".join(p.removeprefix("(top level): ") for p in validation_problems(exc))) from None


if TYPE_CHECKING:
    LightingSection = LightingConfig | None
    TrafficSection = TrafficConfig | None
    LocalPageSection = LocalPageConfig | None
    InferenceSection = InferenceConfig | None
else:
    LightingSection = TrafficSection = LocalPageSection = InferenceSection = Annotated[
        Any, BeforeValidator(_validate_section)
    ]


_LINE_FIELDS = ("baudrate", "parity", "stopbits", "max_outstanding")


def line_problems(devices: list[Any]) -> list[str]:
    """What fails on site when devices share a port: every problem, one a line, as ``[i].path: text``.

    Two drivers on one serial port, one port set to two baud rates (or parities, stop bits), two
    Modbus devices at one unit id on one line. Disabled devices do not hold a port.
    """
    problems: list[str] = []
    first: dict[str, tuple[int, Any]] = {}
    units: dict[tuple[str, int], int] = {}
    for i, dev in enumerate(devices):
        line = getattr(dev, "line", None)
        if line is None or not getattr(dev, "enabled", True) or not hasattr(line, "key"):
            continue
        key = line.key()
        where = key.split(":", 1)[1]
        if key not in first:
            first[key] = (i, dev)
        else:
            _, other = first[key]
            if other.driver != dev.driver or dev.driver != "modbus":
                problems.append(
                    f"[{i}].line: "
                    + tr("two drivers on one port: {port} is already used by {other} ({odrv}), so {name} ({drv}) needs its own port").format(
                        port=where, other=other.name, odrv=other.driver, name=dev.name, drv=dev.driver
                    )
                )
                continue
            for field in _LINE_FIELDS:
                mine, theirs = getattr(line, field, None), getattr(other.line, field, None)
                if mine != theirs:
                    problems.append(
                        f"[{i}].line.{field}: "
                        + tr("one port, two settings: {port} is set to {field} {mine} here and {theirs} by {other}").format(
                            port=where, field=field, mine=mine, theirs=theirs, other=other.name
                        )
                    )
        unit = getattr(dev, "unit", None)
        if dev.driver == "modbus" and isinstance(unit, int):
            if (key, unit) in units:
                other = devices[units[(key, unit)]]
                problems.append(
                    f"[{i}].unit: "
                    + tr("two devices at unit id {unit} on {port}: {name} and {other} (they would answer together)").format(
                        unit=unit, port=where, name=dev.name, other=other.name
                    )
                )
            else:
                units[(key, unit)] = i
    return problems


class LoggingConfig(StrictModel):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(default=False, alias="json")


class HealthConfig(StrictModel):
    """The local health and metrics endpoint (Prometheus text on /metrics, JSON on /health)."""

    listen: str | None = Field(default="127.0.0.1:9108", description="host:port, or null to disable.")

    @field_validator("listen")
    @classmethod
    def _hostport(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^[^:]+:\d{1,5}\Z|^\[[0-9a-fA-F:]+\]:\d{1,5}\Z", value):
            raise ValueError(f"{value!r} is not host:port")
        port = int(value.rpartition(":")[2])
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} in {value!r} is not between 0 and 65535")
        return value


class SupervisorConfig(StrictModel):
    """Restart budget for supervised tasks."""

    max_restarts: int = Field(default=5, ge=0, le=10_000)
    window_s: float = Field(default=60.0, gt=0, le=86_400)
    backoff_s: float = Field(default=1.0, ge=0, le=3600)


class UpdateConfig(StrictModel):
    """Signed updates from the centre (agent/update/): where versions live and what healthy means."""

    dir: RelPath = Field(description="Folder of versions, the current pointer and the journal.")
    min_success: float = Field(
        default=0.8, ge=0.0, le=1.0, description="Poll success rate every device must keep during a watch."
    )
    grace_s: float = Field(
        default=5.0, ge=0.0, le=600.0, description="Time after a switch before a failing device counts."
    )
    max_watch_boots: int = Field(
        default=3, ge=1, le=100, description="Restarts during a watch after which the update is rolled back."
    )
    keep_versions: int = Field(default=5, ge=2, le=100, description="Older versions kept for rollback.")


class SiteConfig(StrictModel):
    """A whole site: identity, devices, uplink, buffer, logging, health."""

    version: Literal[1] = 1
    site: SiteInfo
    devices: DeviceList = Field(default_factory=list)
    sync: SyncConfig | None = None
    store: StoreConfig = Field(default_factory=dict, validate_default=True)
    logging: LoggingConfig = LoggingConfig()
    health: HealthConfig = HealthConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    lighting: LightingSection = None
    inference: InferenceSection = None
    traffic: TrafficSection = Field(default=None, description="Signalised intersections (issue 5).")
    update: UpdateConfig | None = Field(default=None, description="Signed updates; none means updates are refused.")
    local_page: LocalPageSection = Field(default=None, description="The technician's status page.")

    @field_validator("devices", mode="after")
    @classmethod
    def _shared_lines(cls, devices: list[Any]) -> list[Any]:
        problems = line_problems(devices)
        if problems:
            raise ValueError("\n".join(problems))
        return devices

    def _section_device(self, driver: str, runs: str, add_hint: str | None) -> None:
        """The device of kind ``driver`` that runs the top-level section of the same name: the
        section is needed when the device is there, and one such device per site runs ``runs``;
        with ``add_hint``, a section that no device runs is refused too, with that hint."""
        section = getattr(self, driver)
        idx = [i for i, dev in enumerate(self.devices) if dev.driver == driver]
        if idx and section is None:
            raise ValueError(f"devices[{idx[0]}]: a {driver} device needs the top-level {driver} section")
        if add_hint is not None and section is not None and not idx:
            raise ValueError(f"{driver}: nothing runs this section (add a device {add_hint})")
        if len(idx) > 1:
            raise ValueError(f"devices[{idx[1]}]: only one {driver} device per site (it runs {runs})")

    @model_validator(mode="after")
    def _lighting_device(self) -> SiteConfig:
        self._section_device("lighting", "every circuit", "{driver: lighting, name: street-lights}")
        if self.lighting is not None:
            from control.lighting.config import gpio_bank_problem

            problem = gpio_bank_problem(self.lighting, list(self.devices))
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _traffic_device(self) -> SiteConfig:
        self._section_device("traffic", "every intersection", None)
        if self.traffic is not None:
            from control.traffic.config import detector_source_problem

            problem = detector_source_problem(self.traffic, list(self.devices))
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _unique_devices(self) -> SiteConfig:
        seen: set[str] = set()
        for i, dev in enumerate(self.devices):
            if dev.name in seen:
                raise ValueError(f"devices[{i}].name: {dev.name!r} is used by another device")
            seen.add(dev.name)
        return self


def parse_config(
    data: Any, source: str = "<config>", base_dir: Path | None = None, kinds: KindRegistry | None = None
) -> SiteConfig:
    """Validate already-parsed YAML; relative paths resolve against ``base_dir``.

    ``kinds`` is the registry of device kinds (discovered from the entry points when not given).
    """
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): the file must be a mapping with at least a 'site' section"])
    kinds = kinds if kinds is not None else KindRegistry()
    try:
        return SiteConfig.model_validate(data, context={"base_dir": base_dir, "kinds": kinds})
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc)) from exc


def load_config(path: Path | str, kinds: KindRegistry | None = None) -> SiteConfig:
    """Read and validate a site config file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    return parse_config(load_yaml(path), str(path), path.parent, kinds)


def config_json_schema(kinds: KindRegistry | None = None) -> dict[str, Any]:
    """The JSON Schema of the site config (with every registered device kind)."""
    sections: dict[str, Any] = {
        name: (_section_model(name) | None, Field(default=None, description=SiteConfig.model_fields[name].description))
        for name in _SECTIONS
    }
    schema_model = create_model(
        "SiteConfig",
        __base__=SiteConfig,
        __doc__=SiteConfig.__doc__,
        devices=(_schema_device_list(kinds or KindRegistry()), Field(default_factory=list)),
        **sections,
    )
    return schema_model.model_json_schema(by_alias=True)
