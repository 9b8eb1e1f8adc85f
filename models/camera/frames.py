"""Frame sources: RTSP, HTTP MJPEG, V4L2 devices and video files, all through OpenCV.

Only ``opencv-python-headless`` is used (a second OpenCV package in the same environment
shadows ``cv2`` and breaks it). URLs:

* ``rtsp://user:pass@host:554/stream`` (FFmpeg backend; ``transport`` selects TCP or UDP);
* ``http://host/video.mjpg`` (FFmpeg backend, MJPEG over HTTP);
* ``v4l2:///dev/video0`` or ``/dev/video0`` (V4L2 backend);
* ``file:///path/clip.mp4`` or a plain path (FFmpeg backend), optionally looped and paced.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from kernel.errors import DeviceError, DeviceTimeout

Kind = Literal["rtsp", "http", "v4l2", "file"]


@dataclass(frozen=True)
class StreamSpec:
    """A parsed frame-source URL."""

    kind: Kind
    target: str


def parse_url(url: str) -> StreamSpec:
    """Classify a camera URL; raise ``ValueError`` for anything else."""
    lower = url.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return StreamSpec("rtsp", url)
    if lower.startswith(("http://", "https://")):
        return StreamSpec("http", url)
    if lower.startswith("v4l2://"):
        return StreamSpec("v4l2", url[len("v4l2://") :] or "/dev/video0")
    if url.startswith("/dev/video"):
        return StreamSpec("v4l2", url)
    if lower.startswith("file://"):
        return StreamSpec("file", url[len("file://") :])
    if "://" in url:
        raise ValueError(f"{url!r}: unsupported scheme (use rtsp://, http://, v4l2:// or file://)")
    return StreamSpec("file", url)


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def open_capture(spec: StreamSpec, transport: Literal["tcp", "udp"] = "tcp", timeout_s: float = 10.0) -> Any:
    """An opened ``cv2.VideoCapture`` for ``spec``; :class:`DeviceError` if it cannot be opened."""
    if spec.kind == "rtsp":
        # Read by OpenCV's FFmpeg backend (documented in OpenCV's videoio "FFmpeg" notes).
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", f"rtsp_transport;{transport}")
    if spec.kind == "file" and not Path(spec.target).is_file():
        raise DeviceError(f"video file {spec.target!r} does not exist")
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(timeout_s * 1000),
    ]
    if spec.kind == "v4l2":
        cap = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
    else:
        cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise DeviceError(f"cannot open {spec.kind} source {redact(spec.target)}")
    return cap


class FrameReader:
    """Reads frames from one source, blocking; for files it can loop and keep the file's pace.

    ``read`` returns ``(frame, ts)`` with ``ts`` from ``time.time()`` for live sources and the
    file's own timeline (start + position) for files, so a file replays as if it were live.
    """

    def __init__(
        self, url: str, loop: bool = False, pace: bool = True, transport: Literal["tcp", "udp"] = "tcp"
    ) -> None:
        self.spec = parse_url(url)
        self.loop = loop and self.spec.kind == "file"
        self.pace = pace and self.spec.kind == "file"
        self._cap = open_capture(self.spec, transport)
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else 25.0
        self._start = time.time()
        self._mono = time.monotonic()
        self._index = 0
        self.frames_read = 0

    def read(self) -> tuple[np.ndarray, float]:
        """The next frame; :class:`DeviceTimeout` at a stream's end or stall."""
        ok, frame = self._cap.read()
        if not ok and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            raise DeviceTimeout(f"no frame from {self.spec.kind} source {redact(self.spec.target)}")
        self.frames_read += 1
        if self.spec.kind != "file":
            return frame, time.time()
        offset = self._index / self.fps
        self._index += 1
        if self.pace:
            delay = self._mono + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return frame, self._start + offset

    def close(self) -> None:
        """Release the capture."""
        self._cap.release()
