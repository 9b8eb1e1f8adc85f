"""The site configuration: one YAML file per site, validated by pydantic before anything starts."""

from __future__ import annotations

import functools
import re
import zoneinfo
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

from agent.config_base import (
    RelPath,
    StrictModel,
    check_secret_file,
    load_yaml,
    validation_problems,
)
from agent.errors import ConfigError
from agent.kinds import DEVICE_KINDS, kind_module
from agent.lighting.config import LightingConfig
from agent.traffic.config import TrafficConfig
from models.config import InferenceConfig

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class DeviceConfigBase(StrictModel):
    """Fields every device has, whatever its kind."""

    driver: str
    name: str = Field(pattern=NAME_PATTERN, description="Unique device name within the site.")
    enabled: bool = True


@functools.cache
def _device_adapter(kind: str) -> TypeAdapter[Any]:
    return TypeAdapter(kind_module(kind).Config)


def _validate_devices(value: Any, info: ValidationInfo) -> list[Any]:
    """Validate each device against its own kind only, importing only the kinds the site uses.

    A Raspberry Pi running two energy meters never imports OpenCV or the camera pipeline. Problems
    come back one a line as ``[i].path: message``, which the error formatter joins to ``devices``.
    """
    if not isinstance(value, list):
        raise ValueError(f"must be a list of devices, not {type(value).__name__}")
    devices: list[Any] = []
    problems: list[str] = []
    known = ", ".join(sorted(DEVICE_KINDS))
    for i, item in enumerate(value):
        if isinstance(item, DeviceConfigBase):
            devices.append(item)
            continue
        if not isinstance(item, dict):
            problems.append(f"[{i}]: a device is a mapping with at least driver and name")
            continue
        kind = item.get("driver")
        if kind not in DEVICE_KINDS:
            problems.append(f"[{i}].driver: {kind!r} is not a known device kind (one of {known})")
            continue
        try:
            devices.append(_device_adapter(kind).validate_python(item, context=info.context))
        except ValidationError as exc:
            problems.extend(f"[{i}]{'' if p.startswith('[') else '.'}{p}" for p in validation_problems(exc))
    if problems:
        raise ValueError("\n".join(problems))
    return devices


if TYPE_CHECKING:
    DeviceList = list[DeviceConfigBase]
else:
    DeviceList = Annotated[list[Any], BeforeValidator(_validate_devices)]


def _schema_device_list() -> Any:
    """A list of any kind's config, for the JSON Schema only (imports every kind)."""
    classes = tuple(kind_module(kind).Config for kind in DEVICE_KINDS)
    return list[Annotated[Union[classes], Field(discriminator="driver")]]  # type: ignore[valid-type]


class Location(StrictModel):
    """Where the site is (WGS84)."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    elevation_m: float = 0.0


class SiteInfo(StrictModel):
    """The site's identity."""

    id: str = Field(pattern=NAME_PATTERN, description="Site id; also the MQTT topic segment.")
    name: str = Field(min_length=1)
    location: Location
    timezone: str = "Asia/Ho_Chi_Minh"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Ho_Chi_Minh)") from exc
        return value


class TlsConfig(StrictModel):
    """TLS towards the broker; with ``cert_file`` and ``key_file`` it is mutual TLS."""

    ca_file: RelPath
    cert_file: RelPath | None = None
    key_file: RelPath | None = None
    insecure_skip_verify: bool = False

    @field_validator("ca_file", "cert_file")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @field_validator("key_file")
    @classmethod
    def _secret(cls, value: Path | None) -> Path | None:
        return None if value is None else check_secret_file(value)

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class BatchConfig(StrictModel):
    """How readings are packed into one signed upload."""

    max_count: int = Field(default=2000, ge=1, le=100_000)
    max_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Compressed size.")
    max_age_s: float = Field(default=1.0, gt=0, le=3600)


class SyncConfig(StrictModel):
    """The uplink to the central platform."""

    broker: str = Field(description="mqtt://host:port or mqtts://host:port")
    tls: TlsConfig | None = None
    username: str | None = None
    password_file: RelPath | None = None
    client_id: str | None = Field(default=None, description="Defaults to kbe-<site id>.")
    topic_prefix: str = Field(default="kbe", pattern=r"^[A-Za-z0-9_-]+$")
    command_public_keys: list[RelPath] = Field(
        default_factory=list,
        description="The centre's Ed25519 public keys (PEM) that sign commands; none means commands are refused.",
    )
    signing_key_file: RelPath = Field(description="Ed25519 private key (PEM), mode 0600.")
    batch: BatchConfig = BatchConfig()
    ack_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_in_flight: int = Field(default=8, ge=1, le=1000)
    live_share: float = Field(
        default=0.25,
        ge=0.0,
        le=0.9,
        description="Share of each drain batch reserved for the newest readings.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)

    @field_validator("broker")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^(mqtt|mqtts)://[^/:]+(:\d{1,5})?/?$", value):
            raise ValueError(f"{value!r} is not a broker URL like mqtts://broker.example:8883")
        return value

    @field_validator("password_file", "signing_key_file")
    @classmethod
    def _secret(cls, value: Path | None) -> Path | None:
        return None if value is None else check_secret_file(value)

    @model_validator(mode="after")
    def _tls_scheme(self) -> SyncConfig:
        if self.broker.startswith("mqtts://") and self.tls is None:
            raise ValueError("mqtts:// needs a tls section (ca_file at least)")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self


class StoreConfig(StrictModel):
    """The local SQLite buffer."""

    path: RelPath = Path("var/store.db")
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024, description="Cap on the database size.")
    commit_interval_s: float = Field(default=0.05, gt=0, le=5.0)
    queue_size: int = Field(default=50_000, ge=100, description="Readings waiting for a commit, at most.")


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
        if value is not None and not re.match(r"^[^:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$", value):
            raise ValueError(f"{value!r} is not host:port")
        return value


class SupervisorConfig(StrictModel):
    """Restart budget for supervised tasks."""

    max_restarts: int = Field(default=5, ge=0)
    window_s: float = Field(default=60.0, gt=0)
    backoff_s: float = Field(default=1.0, ge=0)


class SiteConfig(StrictModel):
    """A whole site: identity, devices, uplink, buffer, logging, health."""

    version: Literal[1] = 1
    site: SiteInfo
    devices: DeviceList = Field(default_factory=list)
    sync: SyncConfig | None = None
    store: StoreConfig = StoreConfig()
    logging: LoggingConfig = LoggingConfig()
    health: HealthConfig = HealthConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    lighting: LightingConfig | None = None
    inference: InferenceConfig | None = None
    traffic: TrafficConfig | None = Field(default=None, description="Signalised intersections (issue 5).")

    @model_validator(mode="after")
    def _lighting_device(self) -> SiteConfig:
        idx = [i for i, dev in enumerate(self.devices) if dev.driver == "lighting"]
        if idx and self.lighting is None:
            raise ValueError(f"devices[{idx[0]}]: a lighting device needs the top-level lighting section")
        if len(idx) > 1:
            raise ValueError(f"devices[{idx[1]}]: only one lighting device per site (it runs every circuit)")
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


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> SiteConfig:
    """Validate already-parsed YAML; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): the file must be a mapping with at least a 'site' section"])
    try:
        return SiteConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc)) from exc


def load_config(path: Path | str) -> SiteConfig:
    """Read and validate a site config file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    return parse_config(load_yaml(path), str(path), path.parent)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the site config (with every device kind)."""
    schema_model = create_model(
        "SiteConfig",
        __base__=SiteConfig,
        __doc__=SiteConfig.__doc__,
        devices=(_schema_device_list(), Field(default_factory=list)),
    )
    return schema_model.model_json_schema(by_alias=True)
