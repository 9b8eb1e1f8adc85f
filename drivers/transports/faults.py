"""Ready-made manipulators for :class:`~drivers.transports.memory.MemoryTransport` (fault injection)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from drivers.transports.memory import Manipulator, Part


def drop() -> Manipulator:
    """Lose every frame."""
    return lambda data: []


def delay(seconds: float) -> Manipulator:
    """Deliver each frame ``seconds`` late."""
    return lambda data: [float(seconds), data]


def split(size: int, gap_s: float = 0.0) -> Manipulator:
    """Deliver in chunks of ``size`` bytes, ``gap_s`` apart."""

    def fn(data: bytes) -> Sequence[Part]:
        parts: list[Part] = []
        for i in range(0, len(data), size):
            if i and gap_s:
                parts.append(float(gap_s))
            parts.append(data[i : i + size])
        return parts

    return fn


def corrupt(index: int = -1, mask: int = 0x01) -> Manipulator:
    """Flip bits ``mask`` of the byte at ``index`` in each frame."""

    def fn(data: bytes) -> Sequence[Part]:
        if not data:
            return [data]
        b = bytearray(data)
        b[index] ^= mask
        return [bytes(b)]

    return fn


def garbage(n: int = 8, seed: int | None = None) -> Manipulator:
    """Replace each frame with ``n`` random bytes."""
    rng = random.Random(seed)
    return lambda data: [bytes(rng.randrange(256) for _ in range(n))]


def sometimes(fault: Manipulator, probability: float, seed: int | None = None) -> Manipulator:
    """Apply ``fault`` to a random share of frames."""
    rng = random.Random(seed)
    return lambda data: fault(data) if rng.random() < probability else [data]


def chain(*faults: Manipulator) -> Manipulator:
    """Apply several byte-level manipulators in turn (pauses are kept in place)."""

    def fn(data: bytes) -> Sequence[Part]:
        parts: list[Part] = [data]
        for f in faults:
            nxt: list[Part] = []
            for p in parts:
                nxt.extend(f(p) if isinstance(p, bytes) else [p])
            parts = nxt
        return parts

    return fn
