"""Methods of the sync config sections, shared by the pydantic models (:mod:`sync.config`) and the
running agent's plain runtime types (:mod:`agent.runconfig`); nothing here imports pydantic."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class TlsMethods:
    """What the uplink asks of a ``sync.tls`` section."""

    __slots__ = ()
    if TYPE_CHECKING:
        cert_file: Path | None

    def enrolled(self) -> bool:
        """Whether the client certificate is there (mutual TLS possible)."""
        return self.cert_file is not None and self.cert_file.is_file()
