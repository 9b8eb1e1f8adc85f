"""Fixtures for the sync tests: site keys, receiver databases (SQLite and PostgreSQL), receiver
processes, uploaders, and the shared broker fixture from :mod:`tests.brokers`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config import SyncConfig
from kernel.metrics import Metrics
from kernel.readings import Priority, Reading
from sync.receiver_db import join_value
from sync.signing import ensure_keypair, generate_keypair
from sync.store import Store
from sync.uploader import Uploader
from tests.brokers import Mosquitto, mosquitto  # noqa: F401 - fixture
from tests.conftest import agent_argv, agent_env

SITE = "site-a"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class SiteKeys:
    """A site's signing key and the receiver's registry that knows it."""

    key: Path
    pub: Path
    registry: Path

    @property
    def centre_key(self) -> Path:
        """The centre's signing key (acks, rejections), beside the registry: ``keys/centre.key``."""
        return centre_pair(self.registry)[0]

    @property
    def centre_pub(self) -> Path:
        """The centre's public key the agent verifies acks against."""
        return centre_pair(self.registry)[1]


def centre_pair(registry: Path) -> tuple[Path, Path]:
    """The centre's key pair of a test: ``keys/centre.key`` beside the receiver's registry file."""
    return ensure_keypair(registry.parent / "keys", "centre")


@pytest.fixture
def site_keys(tmp_path: Path) -> SiteKeys:
    key, pub = generate_keypair(tmp_path / "keys", SITE)
    registry = tmp_path / "sites.yaml"
    registry.write_text(f"sites:\n  {SITE}:\n    public_keys: [keys/{SITE}.pub]\n")
    return SiteKeys(key, pub, registry)


@contextlib.contextmanager
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"kbe_sync_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The receiver's database: both backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'centre.db'}"
    else:
        with pg_schema_url() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite receiver database (for tests where the backend does not matter)."""
    return f"sqlite:///{tmp_path / 'centre.db'}"


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run a read query against either backend."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not Path(path).exists():
            return []
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            return db.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            return conn.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def stored_readings(url: str) -> list[tuple[str, int, str, str, float, Any]]:
    """(site, seq, device, point, ts, value) of every stored reading, by seq."""
    rows = query(url, "SELECT site_id, seq, device, point, ts, value, value_text, value_type FROM readings "
                      "ORDER BY site_id, seq")
    return [(s, int(q), d, p, float(ts), join_value(v, vt, k)) for s, q, d, p, ts, v, vt, k in rows]


class ReceiverProc:
    """``edge-agent receiver`` in a subprocess, stopped by its PID."""

    def __init__(self, broker: Mosquitto, db: str, registry: Path, workdir: Path, client_id: str,
                 group: str = "centre", env: dict[str, str] | None = None, tls_args: list[str] | None = None,
                 extra_args: list[str] | None = None):
        self.log = workdir / f"{client_id}.log"
        argv = agent_argv("receiver", "--broker", broker.url, "--db", db, "--sites", str(registry),
                          "--signing-key", str(centre_pair(registry)[0]),
                          "--group", group, "--client-id", client_id, *(tls_args or []), *(extra_args or []))
        if broker.url.startswith("mqtt://"):
            argv.append("--allow-plaintext")
        self.logf = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=agent_env(**(env or {})), stdout=self.logf, stderr=subprocess.STDOUT)

    def wait_subscribed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"sites registered" in self.log.read_bytes():
                time.sleep(0.5)  # the SUBSCRIBE goes out right after CONNACK
                return
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.05)
        raise TimeoutError(self.log.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Callable[..., ReceiverProc]]:
    """Factory of receiver processes; all are stopped at the end of the test."""
    started: list[ReceiverProc] = []

    def start(broker: Mosquitto, db: str, registry: Path, client_id: str = "rx-1", **kw: Any) -> ReceiverProc:
        r = ReceiverProc(broker, db, registry, tmp_path, client_id, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def sync_config(broker_url: str, key: Path, **overrides: Any) -> SyncConfig:
    """A SyncConfig for tests: fast timeouts and reconnects; the centre's key is ``keys/centre.pub``
    beside the site key's folder (where :func:`centre_pair` puts it)."""
    data: dict[str, Any] = {
        "broker": broker_url,
        "allow_plaintext": broker_url.startswith("mqtt://") and "tls" not in overrides,
        "centre_public_keys": [str(ensure_keypair(key.parent.parent / "keys", "centre")[1])],
        "signing_key_file": str(key),
        "ack_timeout_s": 5.0,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 2.0,
        "batch": {"max_count": 500, "max_age_s": 0.2},
    }
    data.update(overrides)
    return SyncConfig.model_validate(data)


def make_readings(n: int, start: int = 0, points: int = 4, t0: float = 1_790_000_000.0) -> list[Reading]:
    """``n`` telemetry readings spread over ``points`` points; ts increases per point."""
    out = []
    for i in range(start, start + n):
        out.append(Reading("meter-1", f"p{i % points}", float(i), t0 + i * 0.001, unit="V"))
    return out


def alarm(i: int) -> Reading:
    """An alarm reading."""
    return Reading("meter-1", "alarm", f"over-voltage {i}", 1_790_000_000.0 + i, priority=Priority.ALARM)


class RunningUploader:
    """An Uploader's ``run()`` on an event loop in a background thread."""

    def __init__(self, uploader: Uploader) -> None:
        import threading

        self.uploader = uploader
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.error: BaseException | None = None
        self.thread.start()
        deadline = time.monotonic() + 5
        while self.task is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def go() -> None:
            self.task = asyncio.current_task()
            await self.uploader.run()

        try:
            self.loop.run_until_complete(go())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            self.error = exc

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(15)
        if not self.loop.is_closed() and not self.loop.is_running():
            self.loop.close()
        if self.error is not None:
            raise self.error


@pytest.fixture
def uploaders() -> Iterator[Callable[[Uploader], RunningUploader]]:
    """Run uploaders in background threads; stopped at the end of the test."""
    running: list[RunningUploader] = []

    def start(u: Uploader) -> RunningUploader:
        r = RunningUploader(u)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """The site's store."""
    s = Store(tmp_path / "store.db", SITE, metrics=Metrics())
    yield s
    with contextlib.suppress(Exception):
        s.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    """Poll ``pred`` until it holds; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


