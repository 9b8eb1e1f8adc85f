"""The local ``/metrics`` (Prometheus text) and ``/health`` (JSON) endpoint, for the agent and the receiver.

One minimal HTTP/1.0 server on asyncio, standard library only: the agent serves it in its own event
loop (:class:`HealthServer`), the centre's receiver, which has no event loop, in a thread of its own
(:class:`ThreadedHealthServer`). ``/health`` answers 200 when the report says ``ok`` and 503 when
not; anything else gets 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from kernel.errors import AgentError
from kernel.metrics import CONTENT_TYPE

log = logging.getLogger("kbe.health")

Exposition = Callable[[], str | bytes]
"""Returns the Prometheus text of every metric (rendered when ``/metrics`` is asked for)."""


def respond(path: str, metrics: Exposition, health: Callable[[], dict[str, Any]]) -> tuple[str, str, bytes]:
    """Status line, content type and body for a GET of ``path``."""
    if path.startswith("/metrics"):
        text = metrics()
        return "200 OK", CONTENT_TYPE, text.encode() if isinstance(text, str) else text
    if path.startswith("/health"):
        report = health()
        status = "200 OK" if report.get("ok") else "503 Service Unavailable"
        return status, "application/json", json.dumps(report, indent=1).encode()
    return "404 Not Found", "text/plain", b"try /metrics or /health\n"


class HealthServer:
    """``/metrics`` and ``/health`` on ``listen`` (``host:port``, port 0 for any) in the running event loop.

    ``name`` and ``hint`` word the error when the address is taken:
    ``<name> <host>:<port>: cannot listen: <why><hint>``.
    """

    def __init__(
        self,
        listen: str,
        metrics: Exposition,
        health: Callable[[], dict[str, Any]],
        name: str = "health.listen",
        hint: str = "",
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.metrics = metrics
        self.health = health
        self.name = name
        self.hint = hint
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Bind and serve in the background."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else exc
            raise AgentError(f"{self.name} {self.host}:{self.port}: cannot listen: {why}{self.hint}") from exc
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        log.info("health endpoint on http://%s:%d/metrics", self.host, self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5.0)
            while (await asyncio.wait_for(reader.readline(), timeout=5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else "/"
            status, ctype, data = respond(path, self.metrics, self.health)
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class ThreadedHealthServer:
    """A :class:`HealthServer` on an event loop of its own, in a daemon thread, for a process without one."""

    def __init__(self, server: HealthServer, thread_name: str = "kbe-health") -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=thread_name, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on (the one given, or the one bound for port 0)."""
        return self.server.port

    def start(self) -> None:
        """Bind (raising :class:`AgentError` when the address is taken) and serve in the thread."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        except BaseException:
            self._close_loop()
            raise

    def stop(self) -> None:
        """Stop serving, close the socket and end the thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._close_loop()

    def _close_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_closed():
            self._loop.close()
