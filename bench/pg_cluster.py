"""A private PostgreSQL cluster for a benchmark's centre, tuned as the centre's DBA would tune it.

The shared PostgreSQL on a development machine runs with the packaged defaults (``shared_buffers``
128 MB, ``max_wal_size`` 1 GB). At 70,000 readings/s the receiver's per-point index (then
``readings_by_point``, now ``readings_by_series``) takes one entry per point per second, spread
over every point of the site, so its hot pages
outgrow 128 MB within a minute and every insert then evicts a dirty buffer (measured: 0.4 buffer
written by the inserting backend per reading). No centre would run its ingest database like that,
and a benchmark must not change a shared service's settings, so the bench starts its own cluster
with the settings PostgreSQL's documentation gives as the starting point for a dedicated server
(chapter "Server Configuration: Resource Consumption"):

- ``shared_buffers``: 25 % of the machine's memory, at most 8 GB;
- ``max_wal_size`` raised with it (16 GB) and ``checkpoint_timeout`` 15 min, so that checkpoints
  are spread out instead of forced by WAL volume;
- everything that makes a commit durable left as it is: ``fsync``, ``synchronous_commit`` and
  ``full_page_writes`` on.

The cluster is stopped by its PID, and its directory removed, when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from hil.procs import free_port

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
OS_USER = "postgres"  # the server refuses to run as root


def _bin(name: str) -> str:
    for d in BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found (Debian package postgresql)")
    return found


def tuned_settings() -> dict[str, str]:
    """The server settings of the private cluster (see the module docstring)."""
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    shared_mb = max(128, min(8192, mem_kb // 4 // 1024))
    return {
        "shared_buffers": f"{shared_mb}MB",
        "max_wal_size": "16GB",
        "checkpoint_timeout": "15min",
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
    }


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port of 127.0.0.1 (trust auth, user ``postgres``)."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.settings = tuned_settings() if settings is None else settings
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="kbe-bench-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``postgresql://`` address without a database name."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _as_owner(self) -> dict[str, object]:
        return {"user": OS_USER} if os.geteuid() == 0 else {}

    def start(self, timeout: float = 60.0) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, OS_USER)
        subprocess.run(
            [_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self._as_owner(),  # type: ignore[call-overload]
        )  # fmt: skip
        args = [_bin("postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.root), "-h", "127.0.0.1"]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 - kept for the server's life
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **self._as_owner())  # type: ignore[call-overload]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, check=False
            )
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"private PostgreSQL did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def cpu_seconds(self) -> float:
        """CPU seconds of the server and every backend and worker it started, live or ended."""
        if self.proc is None:
            return 0.0
        hz = os.sysconf("SC_CLK_TCK")
        total = 0
        root = self.proc.pid
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                pid, ppid = int(entry.name), int(fields[1])
                if pid == root:
                    total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
                elif ppid == root:
                    total += int(fields[11]) + int(fields[12])
        return total / hz

    def stop(self) -> None:
        """Fast shutdown by PID, then remove the cluster's directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
