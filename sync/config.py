"""The uplink's and the store's configuration sections."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from kernel.config_base import RelPath, StrictModel, check_secret_file


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
