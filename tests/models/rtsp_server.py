"""A GStreamer RTSP server serving a live moving-ball test pattern as RTP/JPEG, for camera tests.

Run it with the system Python, which has PyGObject (``python3-gi``)::

    /usr/bin/python3 tests/models/rtsp_server.py PORT MOUNT

It prints ``ready rtsp://127.0.0.1:PORT/MOUNT`` once listening and serves until killed. Needs the
Debian packages python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base and
gstreamer1.0-plugins-good (``videotestsrc``, ``jpegenc``, ``rtpjpegpay``). API: GStreamer's
gst-rtsp-server documentation (https://gstreamer.freedesktop.org/documentation/gst-rtsp-server/).
"""

from __future__ import annotations

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc pattern=ball is-live=true"
    " ! video/x-raw,format=I420,width=320,height=240,framerate=15/1"
    " ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)


def main(argv: list[str]) -> int:
    """Serve the test pattern on ``argv[1]`` (port) at ``/argv[2]`` (mount) until SIGTERM."""
    if len(argv) != 3:
        print(f"usage: {argv[0]} PORT MOUNT", file=sys.stderr)
        return 2
    port, mount = argv[1], argv[2].strip("/")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory(f"/{mount}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"ready rtsp://127.0.0.1:{port}/{mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
