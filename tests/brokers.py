"""A private Mosquitto per test: started on a free port with its own config, stopped by PID.

Reusable by any test or HIL rig::

    from tests.brokers import Mosquitto
    with Mosquitto(tmp_path) as broker:
        ... broker.url ...
        broker.stop(); ...; broker.start()   # an outage on the same port

With ``tls=`` (see :mod:`tests.certs`) the listener speaks TLS; ``require_certificate=True`` makes
it mutual TLS; ``extra_conf`` lines are appended to the config (ACLs, identity mapping).
Persistence is on, so sessions and queued QoS 1 messages survive a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from hil.procs import port_open
from tests.certs import TlsFiles
from tests.conftest import free_port


def mosquitto_binary() -> str:
    """Path of the mosquitto executable, or fail the test with how to install it."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    return exe


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until something accepts TCP connections on 127.0.0.1:port (False at once if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class PortTaken(RuntimeError):
    """Someone else holds the port a broker was about to listen on."""


class Mosquitto:
    """One mosquitto process with its own config, data directory and log."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        persistence: bool = True,
        extra_conf: list[str] | None = None,
    ) -> None:
        self.extra_conf = list(extra_conf or [])
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.picked = port is None  # chosen here: may move if taken before the first start
        self.port = port or free_port()
        self.tls = tls
        self.require_certificate = require_certificate
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False  # listened once: its clients know the port from now on
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        """Broker URL for the agent and the receiver."""
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        lines = []
        if os.geteuid() == 0:
            lines.append("user root")  # Mosquitto 2.0 drops privileges otherwise
        lines += [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
        ]
        if self.tls:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "tls_version tlsv1.2",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        lines += self.extra_conf
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start (or restart on the same port) and wait until it accepts connections.

        Before its first start, a broker whose port was chosen for it moves to another free port
        if someone took that port (up to three times); a restart keeps the port its clients know.
        """
        if self.proc is not None and self.proc.poll() is None:
            return self
        for attempt in range(3):
            try:
                return self._start_on_port(timeout)
            except PortTaken:
                if not self.picked or self.started or attempt == 2:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_on_port(self, timeout: float) -> Mosquitto:
        if not self.started and port_open(self.port):
            raise PortTaken(f"port {self.port} is taken before mosquitto started")
        self._write_conf()
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Listening, and by this process: an exit means someone else answers on the port.
        if not wait_port(self.port, timeout, self.proc) or self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None and self.proc.stderr else ""
            self.stop()
            log = self.log.read_text() if self.log.exists() else ""
            if "Address already in use" in err + log:
                raise PortTaken(f"port {self.port} was taken before mosquitto bound it: {err} {log}")
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {err} {log}")
        self.started = True
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this broker (SIGTERM to its PID, then SIGKILL); it saves its persistence file."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh broker on a free port for this test."""
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker
