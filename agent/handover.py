"""The checking side of the hand-over: a config the pydantic models validated, as JSON for the running agent.

After ``edge-agent run --config FILE`` has validated FILE (every problem printed, exit 2, nothing
started), :func:`hand_over` writes the normalised config and the Modbus profiles it names into an
anonymous file and ``exec``s the same command line (:mod:`agent.runtime`): the running agent holds
:mod:`agent.runconfig`'s plain types and never imports pydantic. A site with a device kind or a section
that has no runtime types (lighting, traffic, cameras, ...) keeps running in this process, as before.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import PurePath
from typing import Any, cast

from pydantic import BaseModel

from agent import runconfig
from agent.config import SiteConfig
from agent.runtime import FORMAT, can_exec, exec_self

log = logging.getLogger("kbe.agent")

OPT_OUT_ENV = "KBE_HANDOVER"
"""``KBE_HANDOVER=0`` runs the agent in the checking process (pydantic resident), for comparisons."""


def plain(value: Any) -> Any:
    """A validated model as JSON-ready values: fields by name, paths as text; a model whose methods need
    to know which fields were set (``KEEPS_FIELDS_SET``) carries ``model_fields_set``."""
    if isinstance(value, BaseModel):
        out = {name: plain(getattr(value, name)) for name in type(value).model_fields}
        if getattr(value, "KEEPS_FIELDS_SET", False):
            out["model_fields_set"] = sorted(value.model_fields_set)
        return out
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    return value


def document(cfg: SiteConfig) -> dict[str, Any] | None:
    """What the running agent is handed, or None when the site uses a part without runtime types.

    The profiles of the enabled Modbus devices go with the config; their overrides were checked
    against them when the config was (an override with ``scale: 0`` is a config problem).
    """
    if any(getattr(cfg, section) is not None for section in runconfig.SECTIONS):
        return None
    if any(dev.driver not in runconfig.DEVICE_KINDS for dev in cfg.devices):
        return None
    from drivers.modbus.kind import cached_profile
    from drivers.modbus.points import profile_path

    profiles: dict[str, Any] = {}
    for dev in cast(list[Any], cfg.devices):
        if dev.driver == "modbus" and dev.enabled:
            profiles[str(profile_path(dev.profile))] = plain(cached_profile(dev.profile))
    return {"format": FORMAT, "config": plain(cfg), "profiles": profiles}


def hand_over(cfg: SiteConfig) -> None:
    """``exec`` the running agent with ``cfg`` when the site can run without pydantic; return otherwise."""
    if os.environ.get(OPT_OUT_ENV) == "0" or not can_exec():
        return  # exactly as before the hand-over
    doc = document(cfg)
    if doc is None:
        return
    fd = _anonymous_file(json.dumps(doc, separators=(",", ":")).encode())
    try:
        exec_self(fd)
    except OSError as exc:
        os.close(fd)
        log.warning("cannot start the agent without pydantic (%s); running it in this process", exc)


def _anonymous_file(data: bytes) -> int:
    """An inheritable descriptor of a file holding ``data`` that no path names (a memfd where there is one)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("kbe-config", 0)
    else:
        fd = os.dup(tempfile.TemporaryFile().fileno())  # noqa: SIM115 - the descriptor outlives the object
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd
