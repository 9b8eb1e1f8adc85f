"""A bounded hand-over between the MQTT thread and the receiver's database thread.

The MQTT thread verifies and decodes a batch (CPU) and puts it here; one writer thread takes
whatever has piled up meanwhile (up to ``max_group``) and stores it in one transaction, then
acknowledges. So decoding the next batches overlaps the database's work on the previous ones,
and a busy database gets fewer, larger commits. The queue is bounded: when it is full the MQTT
thread waits, the broker stops delivering, and the agents' in-flight windows hold the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("kbe.receiver")

_T = TypeVar("_T")


class GroupWriter(Generic[_T]):
    """One thread hands items to ``write`` in groups of whatever is waiting, oldest first."""

    def __init__(
        self, write: Callable[[list[_T]], None], maxsize: int = 16, max_group: int = 8, name: str = "kbe-rx-writer"
    ) -> None:
        self._write = write
        self._queue: queue.Queue[_T] = queue.Queue(maxsize)
        self.max_group = max_group
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def put(self, item: _T) -> bool:
        """Queue an item, waiting while the queue is full; False once stopping (the item is dropped)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
            except queue.Full:
                continue
            return True
        return False

    def stop(self, timeout: float = 30.0) -> None:
        """Let the group being written finish; what still waits is dropped (never acknowledged, so resent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                group = [self._queue.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(group) < self.max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(group)
            except Exception:
                # Not acknowledged: the sites send these batches again after their ack timeout.
                log.exception("could not store %d batch(es); they will be resent", len(group))
