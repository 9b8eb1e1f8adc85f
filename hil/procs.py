"""Processes a rig starts: the agent, the receiver and a private Mosquitto, each stoppable by PID.

Every process runs in its own session (process group) so a SIGKILL reaches its children too, writes
its output to a log file in the work dir, and is registered in a :class:`ProcessSet` that stops
whatever is still running on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from kernel.errors import HilFailure

log = logging.getLogger("kbe.hil")

REPO = Path(__file__).resolve().parent.parent


# Ports handed out by free_port lie below the kernel's ephemeral range, so no bind to port 0 and no
# outgoing connection (a client reconnecting to a stopped broker included) is ever given one; a lock
# file per port, held until this process exits, keeps two free_port callers (pytest workers, rigs,
# benches) from choosing the same one.
PORT_LOCKS = Path(tempfile.gettempdir()) / "kbe-ports"
RESERVED_LOW = 20000  # below: well-known and registered service ports (5432, 8080, ...)
_held: dict[int, int] = {}  # port -> the descriptor holding its lock file


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux ``ip_local_port_range``; the IANA default elsewhere)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 49152, 65535


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reserve(port: int) -> bool:
    """Take the machine-wide lock of ``port`` for the life of this process (False if someone holds it)."""
    try:
        if not PORT_LOCKS.is_dir():
            PORT_LOCKS.mkdir(exist_ok=True)
            PORT_LOCKS.chmod(0o1777)  # shared by every user's runs, like /tmp
        fd = os.open(PORT_LOCKS / f"{port}.lock", os.O_CREAT | os.O_RDONLY, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    if not _bindable(port):
        os.close(fd)  # closing drops the lock
        return False
    _held[port] = fd
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free and that nobody else is handed while this process runs.

    Picked below the kernel's ephemeral range and reserved by a lock file (see ``PORT_LOCKS``): a
    port taken by someone else between this call and the server binding it was the cause of
    failures on loaded machines. Falls back to a port the kernel picks if none can be reserved.
    """
    lo, _hi = ephemeral_range()
    if lo - RESERVED_LOW >= 1000:
        for _ in range(200):
            port = random.randrange(RESERVED_LOW, lo)
            if port not in _held and _reserve(port):
                return port
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


class PortTaken(HilFailure):
    """Someone else holds the port a process was about to listen on."""


class Broker(ManagedProcess):
    """A private Mosquitto on a free loopback port, with its own config; stop and start keep the port."""

    def __init__(self, work: Path, port: int | None = None) -> None:
        self.picked = port is None  # the port was chosen here, not by the caller
        self.port = port or free_port()
        self.conf = work / "mosquitto.conf"
        self._write_conf()
        super().__init__("broker", ["mosquitto", "-c", str(self.conf)], work / "logs" / "broker.log")

    def _write_conf(self) -> None:
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
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:PORT"""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start Mosquitto and wait until it accepts connections.

        On its first start, a broker whose port was chosen for it moves to another free port if
        someone took that port meanwhile (up to three times); a restart keeps the port its clients
        were given, and fails if the port is taken.
        """
        movable = self.picked and self.starts == 0
        for attempt in range(3):
            try:
                self._start_on_port(wait_s=0.0 if movable else 10.0)
                return
            except PortTaken as exc:
                if not movable or attempt == 2:
                    raise HilFailure(str(exc)) from None
                log.warning("%s; moving the broker to another port", exc)
                self.port = free_port()
                self._write_conf()

    def _start_on_port(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while port_open(self.port):  # the previous instance's socket may linger a moment
            if time.monotonic() >= deadline:
                raise PortTaken(f"port {self.port} is taken; cannot start the broker there")
            time.sleep(0.1)
        super().start()
        try:
            wait_port(self.port, self)
        except HilFailure:
            if "Address already in use" in self.tail().rsplit("--- start", 1)[-1]:
                raise PortTaken(f"port {self.port} was taken before the broker bound it") from None
            raise
