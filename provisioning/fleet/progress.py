"""Rollout progress for an operator: a redrawn bar on a terminal, one line a minute otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from provisioning.fleet.waves import WaveStatus

BAR_WIDTH = 30


def render_bar(status: WaveStatus) -> str:
    """One line: wave, a bar of healthy/failed/pending devices, and the watch time."""
    n = max(1, status.size)
    ok = round(BAR_WIDTH * status.healthy / n)
    bad = round(BAR_WIDTH * status.failed / n)
    bar = "#" * ok + "x" * bad + "." * max(0, BAR_WIDTH - ok - bad)
    watch = f" watch {status.watching_for_s:4.0f}s" if status.watching_for_s is not None else " updating"
    return (
        f"wave {status.index + 1}/{status.total_waves} [{bar}] "
        f"{status.healthy} ok {status.failed} failed {status.pending} pending "
        + (f"{status.offline} offline " if status.offline else "")
        + f"of {status.size}{watch}"
    )


class TerminalProgress:
    """Redraws one status line in place (``\\r``); events print on their own lines."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._drawn = False

    def event(self, message: str) -> None:
        """Print an event above the bar."""
        if self._drawn:
            self.out.write("\r\x1b[2K")
        self.out.write(message + "\n")
        self._drawn = False
        self.out.flush()

    def update(self, status: WaveStatus) -> None:
        """Redraw the bar."""
        self.out.write("\r\x1b[2K" + render_bar(status))
        self._drawn = True
        self.out.flush()


class LineProgress:
    """For logs and pipes: every event, and the wave's state at most once per ``every_s``."""

    def __init__(
        self, out: TextIO, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out = out
        self.every_s = every_s
        self.clock = clock
        self._last: float | None = None

    def event(self, message: str) -> None:
        """One line, timestamped."""
        self._line(message)
        self._last = None  # the next state line comes right after an event

    def update(self, status: WaveStatus) -> None:
        """A state line when a minute (``every_s``) has passed since the last one."""
        now = self.clock()
        if self._last is None or now - self._last >= self.every_s:
            self._line(render_bar(status))
            self._last = now

    def _line(self, text: str) -> None:
        self.out.write(time.strftime("%H:%M:%S ") + text + "\n")
        self.out.flush()


def progress_for(out: TextIO, every_s: float = 60.0) -> TerminalProgress | LineProgress:
    """A bar on a TTY, lines otherwise."""
    isatty = getattr(out, "isatty", None)
    return TerminalProgress(out) if callable(isatty) and isatty() else LineProgress(out, every_s)
