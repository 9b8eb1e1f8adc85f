"""The installed version of kinhbac-edge: in the agent's build info, the site's status and the receiver's metrics."""

from __future__ import annotations


def agent_version() -> str:
    """The installed distribution's version, or empty."""
    try:
        from importlib.metadata import version

        return version("kinhbac-edge")
    except Exception:
        return ""
