"""The site configuration: one YAML file per site, validated by pydantic before anything starts."""

from __future__ import annotations

import functools
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

from agent.localpage.config import LocalPageConfig
from control.lighting.config import LightingConfig, gpio_bank_problem
from control.traffic.config import TrafficConfig
from kernel.config_base import (
    StrictModel,
    load_yaml,
    validation_problems,
)
from kernel.errors import ConfigError
from kernel.kinds import KindRegistry
from kernel.site import NAME_PATTERN, SiteInfo
from models.config import InferenceConfig
from sync.config import StoreConfig, SyncConfig


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
        if not re.match(r"^[^:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$", value):
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
    lighting: LightingConfig | None = None
    inference: InferenceConfig | None = None
    traffic: TrafficConfig | None = Field(default=None, description="Signalised intersections (issue 5).")
    local_page: LocalPageConfig | None = Field(default=None, description="The technician's status page.")

    @model_validator(mode="after")
    def _lighting_device(self) -> SiteConfig:
        idx = [i for i, dev in enumerate(self.devices) if dev.driver == "lighting"]
        if idx and self.lighting is None:
            raise ValueError(f"devices[{idx[0]}]: a lighting device needs the top-level lighting section")
        if self.lighting is not None and not idx:
            raise ValueError(
                "lighting: nothing runs this section (add a device {driver: lighting, name: street-lights})"
            )
        if len(idx) > 1:
            raise ValueError(f"devices[{idx[1]}]: only one lighting device per site (it runs every circuit)")
        if self.lighting is not None:
            problem = gpio_bank_problem(self.lighting, list(self.devices))
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _traffic_device(self) -> SiteConfig:
        idx = [i for i, dev in enumerate(self.devices) if dev.driver == "traffic"]
        if idx and self.traffic is None:
            raise ValueError(f"devices[{idx[0]}]: a traffic device needs the top-level traffic section")
        if len(idx) > 1:
            raise ValueError(f"devices[{idx[1]}]: only one traffic device per site (it runs every intersection)")
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
    schema_model = create_model(
        "SiteConfig",
        __base__=SiteConfig,
        __doc__=SiteConfig.__doc__,
        devices=(_schema_device_list(kinds or KindRegistry()), Field(default_factory=list)),
    )
    return schema_model.model_json_schema(by_alias=True)
