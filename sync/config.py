"""The uplink's and the store's configuration sections."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from kernel.config_base import RelPath, StrictModel, check_secret_file
from kernel.i18n import tr
from sync.config_methods import TlsMethods
from sync.pki import (
    cert_matches_key,
    check_cert_file,
    check_public_key_file,
    check_signing_key_file,
    check_tls_key_file,
)
from sync.store_file import SQLITE_MAGIC, foreign_store_problem  # noqa: F401 - re-exported


class TlsConfig(TlsMethods, StrictModel):
    """TLS towards the broker; with ``cert_file`` and ``key_file`` it is mutual TLS.

    ``cert_file`` may be missing while the site is not enrolled yet (``sync.enrol``): the agent gets
    it from the centre and writes it there.
    """

    ca_file: RelPath
    cert_file: RelPath | None = None
    key_file: RelPath | None = None
    insecure_skip_verify: bool = False

    @field_validator("ca_file")
    @classmethod
    def _ca(cls, value: Path) -> Path:
        check_cert_file(value)
        return value

    @field_validator("cert_file")
    @classmethod
    def _cert(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists():
            check_cert_file(value)
        return value

    @field_validator("key_file")
    @classmethod
    def _secret(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        check_tls_key_file(value)
        return check_secret_file(value)

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        cert, key = self.cert_file, self.key_file
        if cert is not None and key is not None and cert.is_file() and not cert_matches_key(cert, key):
            raise ValueError(
                "cert_file: "
                + tr("certificate {file!r} was not issued for the key in {key!r}").format(file=str(cert), key=str(key))
            )
        return self



class EnrolConfig(StrictModel):
    """First contact with the centre: the CSR goes out with a one-time token, the certificate comes back."""

    broker: str = Field(description="The enrolment listener: TLS without a client certificate, e.g. mqtts://ioc:8884")
    token_file: RelPath = Field(description="The one-time token from the centre's work order (mode 0600).")
    csr_file: RelPath = Field(description="The CSR written by provision init (CN = site id).")
    retry_s: float = Field(default=30.0, ge=1.0, le=3600, description="Ask again this often until answered.")

    @field_validator("broker")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^mqtts://[^/:]+(:\d{1,5})?/?\Z", value):
            raise ValueError(f"{value!r} is not a TLS broker URL like mqtts://broker.example:8884")
        return value


class BatchConfig(StrictModel):
    """How readings are packed into one signed upload."""

    max_count: int = Field(default=2000, ge=1, le=100_000)
    max_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Compressed size.")
    max_age_s: float = Field(default=1.0, gt=0, le=3600)
    backlog_max_count: int = Field(
        default=20_000,
        ge=1,
        le=100_000,
        description="Largest batch once a backlog builds up (more waiting than max_in_flight full batches): "
        "batches grow instead of multiplying, so an overloaded uplink keeps its throughput. "
        "Never below max_count; max_bytes still bounds every batch.",
    )


class SyncConfig(StrictModel):
    """The uplink to the central platform."""

    broker: str = Field(description="mqtt://host:port or mqtts://host:port")
    tls: TlsConfig | None = None
    username: str | None = None
    password_file: RelPath | None = None
    client_id: str | None = Field(default=None, description="Defaults to kbe-<site id>.")
    topic_prefix: str = Field(default="kbe", pattern=r"^[A-Za-z0-9_-]+$")
    allow_plaintext: bool = Field(
        default=False,
        description="Accept an mqtt:// (unencrypted) broker; for a lab only, and warned at every start.",
    )
    centre_public_keys: list[RelPath] = Field(
        min_length=1,
        max_length=8,
        description="The centre's Ed25519 public keys (PEM) that sign acks and rejections; two while one rotates.",
    )
    command_public_keys: list[RelPath] = Field(
        default_factory=list,
        description="The centre's Ed25519 public keys (PEM) that sign commands; none means commands are refused.",
    )
    signing_key_file: RelPath = Field(description="Ed25519 private key (PEM), mode 0600.")
    enrol: EnrolConfig | None = Field(
        default=None, description="Enrolment with a one-time token while tls.cert_file does not exist yet."
    )
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
    reconnect_min_s: float = Field(default=0.5, gt=0, le=600)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("broker")
    @classmethod
    def _url(cls, value: str) -> str:
        m = re.match(r"^(mqtt|mqtts)://[^/:]+(:(\d{1,5}))?/?\Z", value)
        if not m:
            raise ValueError(f"{value!r} is not a broker URL like mqtts://broker.example:8883")
        if m.group(3) is not None and not 1 <= int(m.group(3)) <= 65535:
            raise ValueError(f"port {m.group(3)} in {value!r} is not between 1 and 65535")
        return value

    @field_validator("centre_public_keys", "command_public_keys")
    @classmethod
    def _public_keys(cls, value: list[Path]) -> list[Path]:
        problems = []
        for i, path in enumerate(value):
            try:
                check_public_key_file(path)
            except ValueError as exc:
                problems.append(f"[{i}]: {exc}")
        if problems:
            raise ValueError("\n".join(problems))
        return value

    @field_validator("password_file")
    @classmethod
    def _secret(cls, value: Path | None) -> Path | None:
        return None if value is None else check_secret_file(value)

    @field_validator("signing_key_file")
    @classmethod
    def _signing_key(cls, value: Path) -> Path:
        check_signing_key_file(value)  # a public key here is named as such, then the mode, then the PEM
        return value

    @model_validator(mode="after")
    def _tls_scheme(self) -> SyncConfig:
        if self.broker.startswith("mqtts://") and self.tls is None:
            raise ValueError("broker: mqtts:// needs a tls section (ca_file at least)")
        if self.broker.startswith("mqtt://") and self.tls is not None:
            raise ValueError(f"broker: {self.broker!r} is plaintext but a tls section is given; use mqtts://")
        if self.broker.startswith("mqtt://") and not self.allow_plaintext:
            raise ValueError(
                f"broker: {self.broker!r} is plaintext MQTT; use mqtts:// with a tls section, or set "
                "allow_plaintext: true (a lab only)"
            )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self

    @model_validator(mode="after")
    def _enrolment(self) -> SyncConfig:
        tls = self.tls
        problems = []
        if tls is not None and tls.cert_file is not None and not tls.cert_file.is_file():
            if self.enrol is None:
                problems.append(
                    "tls.cert_file: "
                    + tr("file {file!r} does not exist (enrol the site, or add a sync.enrol section)").format(
                        file=str(tls.cert_file)
                    )
                )
            elif not self.enrol.token_file.is_file():
                problems.append(
                    "enrol.token_file: "
                    + tr("file {file!r} does not exist: the site is not enrolled and has no token").format(
                        file=str(self.enrol.token_file)
                    )
                )
        if self.enrol is not None:
            if tls is None or tls.cert_file is None:
                problems.append("enrol: " + tr("enrolment needs tls with ca_file, cert_file and key_file"))
            if not self.command_public_keys:
                problems.append(
                    "command_public_keys: " + tr("enrolment needs the centre's public key to check its answer")
                )
            if not self.enrol.csr_file.is_file() and not (tls is not None and tls.enrolled()):
                problems.append(
                    "enrol.csr_file: "
                    + tr("file {file!r} does not exist (run edge-agent provision init)").format(
                        file=str(self.enrol.csr_file)
                    )
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class StoreConfig(StrictModel):
    """The local SQLite buffer."""

    path: RelPath = Field(default=Path("var/store.db"), validate_default=True)
    max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024 * 1024, le=1024**4, description="Cap on the database size."
    )
    commit_interval_s: float = Field(default=0.05, gt=0, le=5.0)
    queue_size: int = Field(
        default=50_000, ge=100, le=1_000_000, description="Readings waiting for a commit, at most."
    )

    @field_validator("path")
    @classmethod
    def _not_foreign(cls, value: Path) -> Path:
        problem = foreign_store_problem(value)
        if problem:
            raise ValueError(problem)
        return value
