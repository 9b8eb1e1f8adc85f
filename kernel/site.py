"""The site's identity and place: the part of the site config every layer may read.

The pydantic models of that part (:class:`~kernel.site_config.SiteInfo`) are in
:mod:`kernel.site_config`; this module imports no pydantic (the running agent reads it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kernel.site_config import SiteInfo

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""Site and device names: lower case, digits, ``_.-``; also used as MQTT topic segments."""


class SiteView(Protocol):
    """What a source may read of the assembled site config: its identity, and sections by name."""

    @property
    def site(self) -> SiteInfo:
        """The site's identity and place."""
        ...
