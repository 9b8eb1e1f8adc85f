"""Counters every incremental framer keeps, and how they reach the metrics registry."""

from __future__ import annotations

from dataclasses import dataclass, fields

from kernel.metrics import Metrics

# Reasons a frame is thrown away; each is one label value of ``kbe_serial_bad_frames_total``.
BAD_REASONS = ("checksum", "length", "malformed", "truncated")


@dataclass
class FrameStats:
    """What a framer has seen since it was created (monotonic counters)."""

    frames: int = 0
    checksum: int = 0
    length: int = 0
    malformed: int = 0
    truncated: int = 0
    garbage_bytes: int = 0

    @property
    def bad(self) -> int:
        """Frames thrown away, whatever the reason."""
        return self.checksum + self.length + self.malformed + self.truncated

    def snapshot(self) -> FrameStats:
        """A copy, to compute what changed since."""
        return FrameStats(**{f.name: getattr(self, f.name) for f in fields(self)})


def publish_delta(metrics: Metrics, device: str, before: FrameStats, after: FrameStats) -> None:
    """Add what ``after`` counted beyond ``before`` to the serial frame metrics of ``device``."""
    good = after.frames - before.frames
    if good:
        metrics.inc("kbe_serial_frames_total", good, {"device": device})
    for reason in BAD_REASONS:
        n = getattr(after, reason) - getattr(before, reason)
        if n:
            metrics.inc("kbe_serial_bad_frames_total", n, {"device": device, "reason": reason})
    junk = after.garbage_bytes - before.garbage_bytes
    if junk:
        metrics.inc("kbe_serial_garbage_bytes_total", junk, {"device": device})
