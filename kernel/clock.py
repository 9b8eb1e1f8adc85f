"""Wall time and its quality.

Timing inside the agent uses :func:`time.monotonic`; wall time is used only to stamp readings, and
each stamp carries a :class:`~kernel.readings.ClockQuality` so the centre can tell a board that
booted with no RTC and no NTP from a synchronised one.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

from kernel.libc import load_libc
from kernel.readings import ClockQuality

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux, 64-bit and 32-bit longs alike).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


def kernel_clock_synced() -> bool | None:
    """Whether the kernel says the clock is synchronised (adjtimex); None when it cannot tell."""
    libc = load_libc(use_errno=True)
    if libc is None:
        return None
    try:
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)


def _has_rtc() -> bool:
    return Path("/dev/rtc0").exists() or Path("/dev/rtc").exists()


class Clock:
    """Stamps readings with UTC time and the current clock quality.

    A GPS fix or an operator can mark the clock synchronised (:meth:`mark_synced`); otherwise the
    kernel's NTP state decides, re-read at most every ``recheck_s`` seconds.
    """

    def __init__(self, recheck_s: float = 30.0, override: ClockQuality | None = None) -> None:
        self._recheck_s = recheck_s
        self._override = override
        self._quality = ClockQuality.UNSYNCED
        self._checked_at = -1e18
        self._external_sync_at: float | None = None

    def now(self) -> float:
        """UTC seconds since the epoch."""
        return time.time()

    def mark_synced(self) -> None:
        """Record that an external source (GPS, the centre) has just confirmed the wall time."""
        self._external_sync_at = time.monotonic()

    def quality(self) -> ClockQuality:
        """The clock quality now."""
        if self._override is not None:
            return self._override
        mono = time.monotonic()
        if self._external_sync_at is not None and mono - self._external_sync_at < 3600:
            return ClockQuality.SYNCED
        if mono - self._checked_at >= self._recheck_s:
            synced = kernel_clock_synced()
            if synced:
                self._quality = ClockQuality.SYNCED
            elif _has_rtc():
                self._quality = ClockQuality.RTC
            else:
                self._quality = ClockQuality.UNSYNCED
            self._checked_at = mono
        return self._quality
