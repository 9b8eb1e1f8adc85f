"""A watchdog that stops a command's child process groups when the command itself dies.

``python -m hil.watchdog`` reads lines from its stdin, a pipe held only by the command that
started it: ``add PGID`` / ``del PGID``. When the pipe ends (the command exited, normally or by
SIGKILL: the kernel closes its end either way) it sends SIGTERM to every group still registered,
then SIGKILL to those left after ``--grace`` seconds, and exits. It runs in its own session so a
Ctrl-C at the terminal does not reach it; the command's own clean-up goes first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import IO

POLL_S = 0.1


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(pgids: set[int], grace_s: float) -> None:
    """SIGTERM every group, SIGKILL what is left after ``grace_s``."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pgids):
        time.sleep(POLL_S)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def watch(stream: IO[str], grace_s: float) -> set[int]:
    """Follow ``add``/``del`` lines until the stream ends; returns the groups left to stop."""
    pgids: set[int] = set()
    for line in stream:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        verb, pgid = parts[0], int(parts[1])
        if pgid <= 1:
            continue
        if verb == "add":
            pgids.add(pgid)
        elif verb == "del":
            pgids.discard(pgid)
    return pgids


def main() -> None:
    """Entry point of the watchdog process."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--tag", default="", help="Free text naming what is watched (shows in ps).")
    args = ap.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_groups(watch(sys.stdin, args.grace), args.grace)


class Watchdog:
    """The command's handle on its watchdog: register each child group, close at the very end."""

    def __init__(self, env: dict[str, str] | None = None, grace_s: float = 5.0, tag: str = "") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hil.watchdog", "--grace", str(grace_s), "--tag", tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=True,
        )

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def add(self, pid: int | None) -> None:
        """Watch the process group of ``pid`` (a child started in its own session)."""
        if pid is not None:
            self._send(f"add {pid}")

    def forget(self, pid: int | None) -> None:
        """The group has been stopped already."""
        if pid is not None:
            self._send(f"del {pid}")

    def close(self, timeout: float = 15.0) -> None:
        """End the pipe and wait until the watchdog has stopped whatever was left."""
        with contextlib.suppress(BrokenPipeError, OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


if __name__ == "__main__":
    main()
