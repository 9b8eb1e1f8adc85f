"""The ``local_page`` section: where the page listens and where its password is."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from kernel.config_base import RelPath, StrictModel, check_secret_file


def _host_of(listen: str) -> str:
    return listen.rpartition(":")[0].strip("[]")


def is_local_address(host: str) -> bool:
    """Loopback, private (RFC 1918 / ULA) or link-local: the cabinet's own network, not the internet."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private or addr.is_link_local


class LocalPageConfig(StrictModel):
    """The technician's status page (see docs/local-page.md)."""

    listen: str = Field(
        default="127.0.0.1:8080",
        pattern=r"^([^:\[\]]+|\[[0-9a-fA-F:]+\]):\d{1,5}$",
        description="host:port; the cabinet's own network only unless allow_public.",
    )
    password_file: RelPath | None = Field(
        default=None, description="File (mode 0600) holding the page's password."
    )
    allow_public: bool = Field(default=False, description="Allow a public or wildcard address.")
    language: str = Field(default="vi", pattern=r"^(vi|en)$", description="Default language of the page.")

    @field_validator("password_file")
    @classmethod
    def _secret(cls, value: Path | None) -> Path | None:
        return None if value is None else check_secret_file(value)

    @field_validator("listen")
    @classmethod
    def _port(cls, value: str) -> str:
        port = int(value.rpartition(":")[2])
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} in {value!r} is not between 0 and 65535")
        return value

    @model_validator(mode="after")
    def _safe(self) -> LocalPageConfig:
        host = _host_of(self.listen)
        if not self.allow_public and not is_local_address(host):
            raise ValueError(
                f"listen: {host!r} is not a loopback or private address; the page is off on public "
                "interfaces unless allow_public: true"
            )
        loopback = host == "localhost" or (is_local_address(host) and ipaddress.ip_address(host).is_loopback)
        if not loopback and self.password_file is None:
            raise ValueError(f"password_file: a page on {host} (not loopback) needs a password file")
        if self.password_file is not None and not self.password():
            raise ValueError(f"password_file: {str(self.password_file)!r} is empty")
        return self

    def password(self) -> str | None:
        """The password (first line of the file), or None when the page is loopback-only without one."""
        if self.password_file is None:
            return None
        lines = self.password_file.read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines else None
