"""Streaming-sensor emulators on a pseudo-terminal, with faults switched on and off at run time.

A device model subclasses :class:`StreamEmulator` and says what it sends (:meth:`next_frame`), how
often (:meth:`interval`), and how it answers host commands (:meth:`on_host_bytes`). The runner
writes through the master side of a :class:`~drivers.transports.PtyPair`; the driver opens
:attr:`StreamEmulator.path` like a real port. Use it from a test or rig either way::

    emu = PmsEmulator()
    path = emu.start()            # own thread and event loop
    emu.faults.set(bad_checksum=0.2, garbage=0.1)
    emu.faults.set(silence=True)  # the sensor stops talking
    emu.stop()

or ``await emu.serve(ready)`` inside an existing loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from drivers.transports import PtyPair
from kernel.errors import DeviceTimeout, TransportError


@dataclass
class Faults:
    """Fault switches, read by the emulator before each frame (thread-safe to change at any time).

    ``garbage``, ``truncate`` and ``bad_checksum`` are probabilities per frame; ``silence`` stops
    all output (frames and command replies) until cleared.
    """

    garbage: float = 0.0
    truncate: float = 0.0
    bad_checksum: float = 0.0
    silence: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def set(self, **changes: float | bool) -> None:
        """Change some switches, for example ``set(garbage=0.2, silence=False)``."""
        with self._lock:
            for key, value in changes.items():
                if key.startswith("_") or not hasattr(self, key):
                    raise ValueError(f"unknown fault {key!r} (garbage, truncate, bad_checksum, silence)")
                setattr(self, key, value)

    def clear(self) -> None:
        """Back to a healthy device."""
        self.set(garbage=0.0, truncate=0.0, bad_checksum=0.0, silence=False)


@dataclass
class EmulatorStats:
    """What the emulator sent, for tests and rig reports."""

    frames: int = 0
    garbage: int = 0
    truncated: int = 0
    bad_checksum: int = 0
    replies: int = 0
    commands: int = 0


class StreamEmulator(ABC):
    """A sensor that streams frames over a pty; subclasses are the device models."""

    baudrate = 9600

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.faults = Faults()
        self.stats = EmulatorStats()
        self.path: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- device model ----------------------------------------------------------------------
    @abstractmethod
    def interval(self) -> float:
        """Seconds until the next unsolicited frame."""

    @abstractmethod
    def next_frame(self) -> bytes | None:
        """The next unsolicited frame, or None when the device sends nothing now (passive, asleep)."""

    @abstractmethod
    def on_host_bytes(self, data: bytes) -> list[bytes]:
        """Bytes from the host; returns the frames to answer with."""

    def break_checksum(self, frame: bytes) -> bytes:
        """The frame with a wrong checksum (default: last byte flipped)."""
        return frame[:-1] + bytes([frame[-1] ^ 0x5A])

    # -- faults ----------------------------------------------------------------------------
    def _apply_faults(self, frame: bytes) -> bytes:
        f = self.faults
        with f._lock:
            garbage, truncate, bad = f.garbage, f.truncate, f.bad_checksum
        out = b""
        if garbage and self.rng.random() < garbage:
            out += bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 24)))
            self.stats.garbage += 1
        if bad and self.rng.random() < bad:
            frame = self.break_checksum(frame)
            self.stats.bad_checksum += 1
        elif truncate and self.rng.random() < truncate:
            frame = frame[: self.rng.randint(1, len(frame) - 1)]
            self.stats.truncated += 1
        return out + frame

    # -- runner ----------------------------------------------------------------------------
    async def serve(self, ready: asyncio.Future[str] | None = None) -> None:
        """Run on the current loop until cancelled (or :meth:`stop`); ``ready`` gets the pty path."""
        pair = PtyPair(self.baudrate)
        self.path = pair.path
        self._stop = asyncio.Event()
        master = pair.master
        await master.open()
        if ready is not None and not ready.done():
            ready.set_result(pair.path)
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.interval()
        try:
            while not self._stop.is_set():
                try:
                    data = await master.read(1024, max(0.0, next_at - loop.time()))
                except DeviceTimeout:
                    data = b""
                silent = self.faults.silence
                if data:
                    replies = self.on_host_bytes(data)
                    if not silent:
                        for r in replies:
                            await master.write(self._apply_faults(r))
                            self.stats.replies += 1
                if loop.time() >= next_at:
                    frame = self.next_frame()
                    if frame is not None and not silent:
                        await master.write(self._apply_faults(frame))
                        self.stats.frames += 1
                    next_at = loop.time() + self.interval()
        finally:
            await master.close()
            pair.close()

    def start(self, timeout: float = 5.0) -> str:
        """Run in a thread of its own; returns the pty path for the driver to open."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        ready: threading.Event = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            async def body() -> None:
                self._loop = asyncio.get_running_loop()
                fut: asyncio.Future[str] = self._loop.create_future()
                task: asyncio.Future[None] = asyncio.ensure_future(self.serve(fut))
                waiters: list[asyncio.Future[object]] = [fut, task]  # type: ignore[list-item]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                ready.set()
                await task

            try:
                asyncio.run(body())
            except BaseException as exc:
                errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=main, name=f"emu-{type(self).__name__}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or errors or self.path is None:
            raise TransportError(f"emulator did not start: {errors[0] if errors else 'timeout'}")
        return self.path

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread started by :meth:`start` and release the pty."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
