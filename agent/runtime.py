"""The running agent's side of the hand-over: plain config objects from JSON, no pydantic.

``edge-agent run --config FILE`` checks FILE with the pydantic models (:mod:`agent.handover`), writes
the normalised config into an anonymous file and ``exec``s its own command line with
``KBE_HANDOVER_FD`` naming that file: same PID, so systemd, balena and signals see one process. The
new interpreter lands here, builds :mod:`agent.runconfig`'s frozen dataclasses from the JSON and runs
the agent; pydantic, its models and their validators never enter it. A restart after an update
``exec``s the command line again, so the new version is checked exactly as at a start.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from kernel.errors import AgentError

if TYPE_CHECKING:
    from agent.config import SiteConfig

HANDOVER_ENV = "KBE_HANDOVER_FD"
"""Names the descriptor of the checked config in the process ``exec``ed to run the agent."""
FORMAT = 1
"""Version of the hand-over document (both sides are the same release; a mismatch is a bug)."""


def exec_self(handover_fd: int | None = None) -> NoReturn:
    """Replace this process with a fresh interpreter running the same command line (same PID).

    With ``handover_fd`` the new process runs the agent from that checked config; without, it starts
    as at boot (checks the config file again). Raises :class:`OSError` when the exec fails.
    """
    env = dict(os.environ)
    env.pop(HANDOVER_ENV, None)
    if handover_fd is not None:
        env[HANDOVER_ENV] = str(handover_fd)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, sys.orig_argv, env)  # noqa: S606 - this interpreter, its own command line


def can_exec() -> bool:
    """Whether this interpreter can ``exec`` itself with its own command line."""
    return bool(sys.executable) and bool(getattr(sys, "orig_argv", None)) and os.name == "posix"


def read_handover(fd_text: str) -> dict[str, Any]:
    """The hand-over document from the descriptor ``fd_text`` names (closed once read)."""
    try:
        fd = int(fd_text)
        with os.fdopen(fd, "rb") as f:
            f.seek(0)
            doc = json.loads(f.read())
    except (ValueError, OSError) as exc:
        raise AgentError(f"{HANDOVER_ENV}={fd_text!r}: no checked config to run ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AgentError(f"{HANDOVER_ENV}: not a hand-over document of format {FORMAT}")
    return doc


def run_handed_over(config_file: Path, fd_text: str) -> None:
    """Run the agent from the checked config the process before the ``exec`` handed over."""
    from agent import runconfig
    from agent.app import run_agent
    from kernel.kinds import KindRegistry

    doc = read_handover(fd_text)
    cfg = runconfig.site_config(doc["config"])
    if doc["profiles"]:
        from drivers.modbus.kind import remember_profiles

        profiles: dict[str, Any] = {path: runconfig.profile(data) for path, data in doc["profiles"].items()}
        remember_profiles(profiles)
    kinds = KindRegistry()
    updates = None
    if cfg.update is not None:
        from agent.update.manager import UpdateManager

        # The checking process chose the version and finished any interrupted step already.
        updates = UpdateManager.attach(cast("SiteConfig", cfg), config_file, kinds)
    # The runtime types have the models' fields and methods (tools/gen_runconfig.py): typed as the models.
    run_agent(cast("SiteConfig", cfg), kinds, updates=updates, reload=_restart_checked)


def _restart_checked() -> NoReturn:
    """After an update's switch: start again as at boot, so the selected version is checked first."""
    exec_self()
