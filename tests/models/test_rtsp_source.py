"""The RTSP frame source against a real GStreamer RTSP server (RTP/JPEG over RTSP-interleaved TCP)."""

from __future__ import annotations

import itertools
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kernel.errors import DeviceError, DeviceTimeout
from models.camera.frames import FrameReader
from tests.conftest import free_port

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
APT_PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
    "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
    "missing = [e for e in ('videotestsrc', 'jpegenc', 'rtpjpegpay') if Gst.ElementFactory.find(e) is None];"
    "print(' '.join(missing))"
)


def _require_gstreamer() -> None:
    """Fail (not skip) with the packages to install when the RTSP server cannot run here."""
    hint = f"the RTSP test needs GStreamer's RTSP server: apt-get install {APT_PACKAGES}"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{SYSTEM_PYTHON} not found; {hint}")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        last = probe.stderr.strip().splitlines()[-1:]
        pytest.fail(f"{hint} ({' '.join(last)})")
    if probe.stdout.strip():
        pytest.fail(f"GStreamer elements missing ({probe.stdout.strip()}); {hint}")


def _start_server(port: int, mount: str, log: Path) -> subprocess.Popen[str]:
    """The server process, once it says it listens; its stderr goes to ``log`` (a pipe could fill)."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(port), mount], stdout=subprocess.PIPE, stderr=err, text=True
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15.0)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready "):
        _stop(proc)
        pytest.fail(f"RTSP server did not start: {line!r} {log.read_text()[-2000:]}")
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _read_until_failure(reader: FrameReader, deadline: float) -> None:
    """Read until the reader raises (the expected outcome) or ``deadline`` passes (a bug)."""
    while time.monotonic() < deadline:
        reader.read()


@pytest.fixture
def rtsp_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    _require_gstreamer()
    port = free_port()
    proc = _start_server(port, "test", tmp_path / "rtsp_server.log")
    try:
        yield f"rtsp://127.0.0.1:{port}/test", proc
    finally:
        _stop(proc)


@pytest.mark.timeout(60)
def test_rtsp_stream_frames_move_and_a_dead_server_is_a_device_error(
    rtsp_server: tuple[str, subprocess.Popen[str]],
) -> None:
    url, proc = rtsp_server
    reader = FrameReader(url, transport="tcp")
    try:
        frames = []
        stamps = []
        for _ in range(10):
            frame, ts = reader.read()
            frames.append(frame)
            stamps.append(ts)
        assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)
        assert stamps == sorted(stamps)
        assert abs(stamps[-1] - time.time()) < 5.0
        # The ball moves: every frame differs from the one before (a still pattern gives exactly 0,
        # the ball >= 0.4 grey levels per pixel) and the drift from the first frame grows past 1.
        step = [_mean_abs_diff(a, b) for a, b in itertools.pairwise(frames)]
        assert min(step) > 0.05, step
        drift = [_mean_abs_diff(frames[0], f) for f in frames[1:]]
        assert max(drift) > 1.0, drift
        assert reader.frames_read == 10

        _stop(proc)
        # Frames already buffered may still come out; then the stream's end is a DeviceTimeout,
        # which makes CameraSource.run raise so the supervisor restarts the camera.
        with pytest.raises(DeviceTimeout, match="no frame from rtsp source"):
            _read_until_failure(reader, time.monotonic() + 30.0)
    finally:
        reader.close()
    # The supervisor's restart reopens the stream: with the server gone that is a DeviceError.
    with pytest.raises(DeviceError, match="cannot open rtsp source"):
        FrameReader(url, transport="tcp")
