"""Frame sources: URL parsing, an HTTP MJPEG stream over loopback, and failures that restart a camera."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.errors import DeviceError, DeviceTimeout
from models.camera.frames import FrameReader, parse_url, redact
from tests.conftest import free_port


@pytest.mark.parametrize(
    ("url", "kind", "target"),
    [
        ("rtsp://u:p@10.0.0.5:554/s1", "rtsp", "rtsp://u:p@10.0.0.5:554/s1"),
        ("http://cam.local/video.mjpg", "http", "http://cam.local/video.mjpg"),
        ("v4l2:///dev/video2", "v4l2", "/dev/video2"),
        ("/dev/video0", "v4l2", "/dev/video0"),
        ("file:///data/clip.mp4", "file", "/data/clip.mp4"),
        ("clips/road.avi", "file", "clips/road.avi"),
    ],
)
def test_parse_url(url: str, kind: str, target: str) -> None:
    spec = parse_url(url)
    assert (spec.kind, spec.target) == (kind, target)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        parse_url("ftp://cam/x")


@given(user=st.from_regex(r"[a-z]{1,8}", fullmatch=True), password=st.text(min_size=1, max_size=20))
def test_redact_never_shows_the_password(user: str, password: str) -> None:
    url = f"rtsp://{user}:{password}@10.1.2.3:554/stream"
    shown = redact(url)
    assert shown == f"rtsp://{user}:***@10.1.2.3:554/stream"


def _jpeg(i: int) -> bytes:
    img = np.full((120, 160, 3), 40, np.uint8)
    cv2.rectangle(img, (10 + 5 * i, 30), (50 + 5 * i, 70), (255, 255, 255), -1)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    frames = 20

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for i in range(self.frames):
                data = _jpeg(i)
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                self.wfile.write(f"Content-Length: {len(data)}\r\n\r\n".encode())
                self.wfile.write(data + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mjpeg_url() -> Iterator[str]:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _MjpegHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/video.mjpg"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_mjpeg_stream_is_read_frame_by_frame(mjpeg_url: str) -> None:
    reader = FrameReader(mjpeg_url)
    frames = []
    try:
        while True:
            try:
                frames.append(reader.read())
            except DeviceTimeout:
                break
    finally:
        reader.close()
    assert len(frames) >= 15  # the demuxer may drop a frame at the start or end
    first, ts0 = frames[0]
    assert first.shape == (120, 160, 3)
    # The white box moves right by 5 px per frame.
    xs = [int(np.argmax(f[50].max(axis=1) > 128)) for f, _ in frames]
    assert xs == sorted(xs)
    assert xs[-1] > xs[0]
    assert frames[-1][1] >= ts0


def test_missing_file_and_dead_stream_raise_device_errors(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="does not exist"):
        FrameReader(str(tmp_path / "nope.avi"))
    port = free_port()  # nothing listens there
    with pytest.raises(DeviceError, match="cannot open http source"):
        FrameReader(f"http://127.0.0.1:{port}/video.mjpg")


def test_corrupt_video_file_is_a_device_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 100)
    with pytest.raises(DeviceError, match="cannot open file source"):
        FrameReader(str(bad), pace=False)
