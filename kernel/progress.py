"""Progress of a long command (a rig run, a bench, the firmware suite) on the terminal.

On a terminal one status line is redrawn in place; without one (CI logs) a line is written once a
minute, plus the first and the last. Standard library only: nothing here is on the device's path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

MAX_NAMES = 4


@dataclass(frozen=True)
class Snapshot:
    """Where a long command stands: time spent and left, faults active, readings stored, failures."""

    elapsed_s: float
    total_s: float | None = None  # None: unknown length
    faults: Sequence[str] | None = None  # faults active now (None: the command injects none)
    stored: int | None = None  # readings stored so far (None: not applicable)
    failing: Sequence[str] | None = None  # expectations failing so far (None: nothing is checked)  # expectations failing so far
    phase: str = ""  # "run", "drain", "check" ...
    done: int | None = None  # steps done (tests run) when the command counts steps
    steps: int | None = None


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_NAMES])
    return shown + (f" +{len(items) - MAX_NAMES}" if len(items) > MAX_NAMES else "")


def status_line(title: str, snap: Snapshot) -> str:
    """``hil air-quality  01:10 / 05:00 (03:50 left)  faults: dead(th)  stored 812  failing: none``"""
    parts = [title] if title else []
    if snap.phase:
        parts.append(f"[{snap.phase}]")
    if snap.total_s is not None:
        left = max(0.0, snap.total_s - snap.elapsed_s)
        parts.append(f"{_clock(snap.elapsed_s)} / {_clock(snap.total_s)} ({_clock(left)} left)")
    else:
        parts.append(_clock(snap.elapsed_s))
    if snap.steps is not None:
        parts.append(f"{snap.done or 0}/{snap.steps} done")
    if snap.faults is not None:
        parts.append(f"faults: {_names(snap.faults) if snap.faults else 'none'}")
    if snap.stored is not None:
        parts.append(f"stored {snap.stored}")
    if snap.failing is not None:
        parts.append(f"failing: {_names(snap.failing) if snap.failing else 'none'}")
    return "  ".join(parts)


class Progress:
    """Shows snapshots: redrawn in place on a terminal, one line every ``every_s`` elsewhere."""

    def __init__(
        self,
        title: str,
        stream: TextIO | None = None,
        tty: bool | None = None,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._drawn = False
        self.lines = 0  # lines written (without a terminal), for tests

    def update(self, snap: Snapshot) -> None:
        """Show ``snap`` (a terminal: now; otherwise only if a minute passed since the last line)."""
        text = status_line(self.title, snap)
        if self.tty:
            width = 200
            self.stream.write("\r\x1b[K" + text[:width])
            self._drawn = True
            self.stream.flush()
            return
        now = self._clock()
        if self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        self.stream.write(text + "\n")
        self.lines += 1
        self.stream.flush()

    def close(self, snap: Snapshot | None = None) -> None:
        """End the status line (and write ``snap`` as the last one, if given)."""
        if snap is not None:
            if self.tty:
                self.stream.write("\r\x1b[K" + status_line(self.title, snap) + "\n")
            else:
                self.stream.write(status_line(self.title, snap) + "\n")
                self.lines += 1
        elif self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
        self._drawn = False
        self.stream.flush()
