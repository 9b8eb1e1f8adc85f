"""The ``edge-agent`` command. Every error the agent raises on purpose is printed as one line;
``DEBUG=1`` shows the traceback instead.

``edge-agent run --config FILE``, what a site runs, starts without importing ``click`` (0.7 MB
resident for the life of the agent); every other command line goes to the ``click`` group in
:mod:`agent.commands` (``agent.cli.cli`` is that group, imported when asked for). Once the file is
checked, that command ``exec``s the running agent in the same process (:mod:`agent.handover`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kernel.errors import AgentError, ConfigError


def run_site_file(config_file: Path, hand_over: bool = False) -> None:
    """Run the agent for the site in ``config_file`` until SIGTERM or Ctrl-C.

    With ``hand_over`` (the program's own command line), a checked config is run by a fresh
    interpreter ``exec``ed in this process, which never imports pydantic (:mod:`agent.handover`).
    """
    from agent.runtime import HANDOVER_ENV

    handed = os.environ.pop(HANDOVER_ENV, None)
    if handed is not None and hand_over:
        from agent.runtime import run_handed_over

        run_handed_over(config_file, handed)
        return
    from agent.app import run_agent
    from agent.update.manager import UpdateManager
    from kernel.kinds import KindRegistry

    kinds = KindRegistry()
    cfg, updates = UpdateManager.resolve(config_file, kinds)
    if hand_over:
        from agent.handover import hand_over as exec_checked

        exec_checked(cfg)
    run_agent(cfg, kinds, updates=updates, reload=lambda: UpdateManager.resolve(config_file, kinds))


def run_config_arg(args: Sequence[str]) -> Path | None:
    """The FILE of exactly ``run --config FILE`` (or ``--config=FILE``); None for any other line."""
    if len(args) == 3 and args[0] == "run" and args[1] == "--config":
        value = args[2]
    elif len(args) == 2 and args[0] == "run" and args[1].startswith("--config="):
        value = args[1].removeprefix("--config=")
    else:
        return None
    if not value or value.startswith("-"):
        return None  # click says what is wrong with it
    return Path(value)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _click_main(args: list[str]) -> Any:
    import click

    from agent.commands import cli

    try:
        return cli.main(args=args, prog_name="edge-agent", standalone_mode=False)
    except click.exceptions.Abort:
        _say("edge-agent: aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of ``edge-agent``."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config_file = run_config_arg(args)
        if config_file is not None:
            return run_site_file(config_file, hand_over=argv is None)
        return _click_main(args)
    except ConfigError as exc:
        if os.environ.get("DEBUG") == "1":
            raise
        # Every problem on its own line, named by its path; nothing was started.
        for problem in exc.problems:
            _say(f"{exc.source}: {problem}")
        sys.exit(exc.exit_code)
    except AgentError as exc:
        if os.environ.get("DEBUG") == "1":
            raise
        _say(f"edge-agent: error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def __getattr__(name: str) -> Any:
    if name == "cli":  # the click group, for tests and tools that drive it directly
        from agent.commands import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
