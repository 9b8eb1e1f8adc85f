"""A log that says a repeated problem once per interval, with how many were not logged in between."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable


class RateLimitedLog:
    """One line per key per ``interval_s`` (monotonic clock); the next line says how many were held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at WARNING unless ``key`` was logged within the interval; True when logged."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
            if len(self._last) > 1000:  # bounded: forget the oldest keys
                for old in sorted(self._last, key=self._last.__getitem__)[:500]:
                    self._last.pop(old, None)
        suffix = f" ({held} more like it not logged in the last {self.interval_s:.0f} s)" if held else ""
        self.logger.warning(msg + suffix, *args)
        return True
