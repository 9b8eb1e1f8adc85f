"""The C library through ``ctypes``, opened by its soname before anything searches for it."""

from __future__ import annotations

import ctypes
import functools

SONAME = "libc.so.6"


@functools.cache
def load_libc(use_errno: bool = False) -> ctypes.CDLL | None:
    """glibc (already mapped into the process); None where there is no C library ``ctypes`` can open.

    Opened once per ``use_errno`` and kept: every ``CDLL`` makes a new function-pointer class, so a
    caller that asks every 30 s (the clock's NTP check) would leave a class a time for the collector.
    ``ctypes.util.find_library`` runs ``ldconfig -p`` (or gcc) in a subprocess and imports
    ``subprocess`` and ``shutil``: it is only asked when the glibc soname does not open (musl, macOS).
    """
    try:
        return ctypes.CDLL(SONAME, use_errno=use_errno)
    except OSError:
        pass
    from ctypes.util import find_library

    name = find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=use_errno)
    except OSError:
        return None
