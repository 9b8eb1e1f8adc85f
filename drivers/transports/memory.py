"""An in-memory pair of transports with a fault-injection hook (the NullModem idea, for tests and HIL).

``memory_pair()`` returns two connected ends. Bytes written on one end pass through the sending
end's ``manipulator`` (if set) before reaching the other end. A manipulator takes the written bytes
and returns a list of parts: ``bytes`` are delivered, a ``float`` is a pause in seconds before the
next part. :mod:`drivers.transports.faults` has ready-made manipulators (drop, delay, split, corrupt).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from drivers.transports.base import Transport

Part = bytes | float
Manipulator = Callable[[bytes], Sequence[Part]]


class MemoryTransport(Transport):
    """One end of an in-memory pair. ``baudrate`` only sets the nominal line timing."""

    def __init__(self, name: str = "memory", baudrate: int | None = None) -> None:
        super().__init__()
        self.name = name
        self.baudrate = baudrate
        self.peer: MemoryTransport | None = None
        self.manipulator: Manipulator | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def set_manipulator(self, fn: Manipulator | None) -> None:
        """Install (or remove with None) the fault hook applied to bytes this end sends."""
        self.manipulator = fn

    async def _open(self) -> None:
        return None

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _write(self, data: bytes, timeout: float) -> None:
        peer = self.peer
        if peer is None or peer.closed:
            return  # like a wire with nobody listening
        if self.manipulator is None:
            peer._feed(data)
            return
        parts = list(self.manipulator(data))
        if all(isinstance(p, bytes) for p in parts):
            for p in parts:
                peer._feed(p)  # type: ignore[arg-type]
            return
        task = asyncio.get_running_loop().create_task(self._deliver(peer, parts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _deliver(peer: MemoryTransport, parts: Sequence[Part]) -> None:
        for part in parts:
            if isinstance(part, float):
                await asyncio.sleep(part)
            elif not peer.closed:
                peer._feed(part)


def memory_pair(baudrate: int | None = None) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-memory transports (``a`` talks to ``b``)."""
    a = MemoryTransport("memory-a", baudrate)
    b = MemoryTransport("memory-b", baudrate)
    a.peer, b.peer = b, a
    return a, b
