"""Processes a rig starts: the agent, the receiver and a private Mosquitto, each stoppable by PID.

Every process runs in its own session (process group) so a SIGKILL reaches its children too, writes
its output to a log file in the work dir, and is registered in a :class:`ProcessSet` that stops
whatever is still running on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kernel.errors import HilFailure

log = logging.getLogger("kbe.hil")

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def agent_env() -> dict[str, str]:
    """Environment for ``python -m agent`` from this checkout (works without installing it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("DEBUG", None)
    return env


def agent_argv(*args: str) -> list[str]:
    """argv running ``edge-agent`` with this interpreter."""
    return [sys.executable, "-m", "agent", *args]


class ManagedProcess:
    """A child process that can be started, stopped gently, killed hard and started again."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    @property
    def pid(self) -> int | None:
        """PID of the running process, if any."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the process (appending to its log file)."""
        if self.running():
            raise HilFailure(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"--- start {self.starts + 1}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.starts += 1
        log.info("%s started (pid %d)", self.name, self.proc.pid)

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def _reap(self, timeout: float) -> bool:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        self.exit_codes.append(code)
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (None if it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self._signal(signal.SIGTERM)
        if not self._reap(timeout):
            log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            self._signal(signal.SIGKILL)
            self._reap(10.0)
        log.info("%s stopped (exit %s)", self.name, self.proc.returncode)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a power cut, as far as the process can tell)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGKILL)
        self._reap(10.0)
        log.info("%s killed with SIGKILL", self.name)

    def tail(self, lines: int = 20) -> str:
        """The last lines of the process's log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessSet:
    """Every process of a run; :meth:`stop_all` stops those still running, newest first."""

    def __init__(self) -> None:
        self.procs: list[ManagedProcess] = []

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        """Register a process (started or not)."""
        self.procs.append(proc)
        return proc

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every running process."""
        for p in reversed(self.procs):
            try:
                p.stop(timeout)
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", p.name)


def wait_port(port: int, proc: ManagedProcess, timeout: float = 15.0) -> None:
    """Wait until ``proc`` listens on ``port``; raise :class:`HilFailure` if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if not proc.running():
            raise HilFailure(f"{proc.name} exited before listening on port {port}:\n{proc.tail()}")
        time.sleep(0.05)
    raise HilFailure(f"{proc.name} did not listen on port {port} within {timeout:.0f} s:\n{proc.tail()}")


class Broker(ManagedProcess):
    """A private Mosquitto on a free loopback port, with its own config; stop and start keep the port."""

    def __init__(self, work: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        conf = work / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # Mosquitto 2 drops privileges to 'mosquitto' otherwise
        conf.write_text("\n".join(lines) + "\n")
        super().__init__("broker", ["mosquitto", "-c", str(conf)], work / "logs" / "broker.log")

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:PORT"""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start Mosquitto and wait until it accepts connections."""
        deadline = time.monotonic() + 10.0
        while port_open(self.port):  # the previous instance's socket may linger a moment
            if time.monotonic() > deadline:
                raise HilFailure(f"port {self.port} is taken; cannot start the broker again")
            time.sleep(0.1)
        super().start()
        wait_port(self.port, self)
