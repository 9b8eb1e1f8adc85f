"""Pins a HIL rig drives from another process: gpiozero's MockFactory fed over a local socket.

The agent side is real gpiozero (``MockFactory`` with PWM-capable ``MockPin`` s), so the bank, its
edge callbacks and the lighting controller run exactly as on a board; only the electrical level of
input pins comes from outside. The rig listens on a Unix socket and writes one line per change::

    <BCM pin> <0|1>\n

and, to every new connection, the level of every pin it has set so far (so an agent restarted by
the rig sees the contacts as they are). Pins the rig never set float at their pull-up/-down level.
The factory connects in a background thread and reconnects when the rig restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from kernel.errors import DeviceError

log = logging.getLogger("kbe.gpio")

SOCKET_ENV = "KBE_GPIO_RIG_SOCKET"
MAX_LINE = 64


def parse_line(line: bytes) -> tuple[int, bool]:
    """``b"22 1"`` -> (22, True); :class:`ValueError` for anything else."""
    text = line.decode("ascii").strip()
    pin_text, level_text = text.split()
    pin, level = int(pin_text), int(level_text)
    if not 0 <= pin <= 53 or level not in (0, 1):
        raise ValueError(f"pin {pin} level {level}")
    return pin, bool(level)


def format_line(pin: int, level: bool) -> bytes:
    """The wire form of one level change."""
    return f"{pin} {int(level)}\n".encode("ascii")


class RigPinFactory(MockFactory):
    """A MockFactory whose input levels the rig sets through the Unix socket ``path``."""

    def __init__(self, path: str, retry_s: float = 0.2) -> None:
        super().__init__(pin_class=MockPWMPin)
        self.path = path
        self.retry_s = retry_s
        self.applied = 0  # level changes applied (tests, health)
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="gpio-rig-pins", daemon=True)
        self._thread.start()

    def _apply(self, pin: int, level: bool) -> None:
        mock = self.pin(pin)
        if level:
            mock.drive_high()
        else:
            mock.drive_low()
        self.applied += 1

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        while not self._stop.is_set():
            data = sock.recv(4096)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    pin, level = parse_line(line)
                except (ValueError, UnicodeDecodeError):
                    log.warning("gpio rig: ignoring line %r", line[:MAX_LINE])
                    continue
                self._apply(pin, level)
            if len(buf) > MAX_LINE:
                log.warning("gpio rig: dropping an over-long line")
                buf = b""

    def _run(self) -> None:
        while not self._stop.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                self._stop.wait(self.retry_s)
                continue
            self._sock = sock
            log.info("gpio rig: connected to %s", self.path)
            try:
                self._serve(sock)
            except OSError as exc:
                log.info("gpio rig: connection lost (%s)", exc)
            finally:
                self._sock = None
                sock.close()
            self._stop.wait(self.retry_s)

    def close(self) -> None:
        """Stop listening to the rig, then release the pins."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(2.0)
        super().close()


def rig_pin_factory(path: str | None = None) -> Any:
    """The factory for ``pin_factory: rig``: the socket path from ``$KBE_GPIO_RIG_SOCKET``."""
    path = path or os.environ.get(SOCKET_ENV, "").strip()
    if not path:
        raise DeviceError(f"pin_factory 'rig' needs {SOCKET_ENV} set to the rig's socket path")
    return RigPinFactory(path)
