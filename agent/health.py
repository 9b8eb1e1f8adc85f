"""The local health and metrics endpoint: ``/metrics`` (Prometheus text) and ``/health`` (JSON)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from kernel.errors import AgentError
from kernel.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("kbe.health")


class HealthServer:
    """A minimal HTTP/1.0 server on the loopback for a technician's laptop or a Prometheus agent."""

    def __init__(self, listen: str, metrics: Metrics, health: Callable[[], dict[str, Any]]) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.metrics = metrics
        self.health = health
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Bind and serve in the background."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise AgentError(
                f"health.listen {self.host}:{self.port}: cannot listen: "
                f"{os.strerror(exc.errno) if exc.errno else exc} "
                "(is another agent running with this config?)"
            ) from exc
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
            if path.startswith("/metrics"):
                status, ctype, body = "200 OK", CONTENT_TYPE, self.metrics.render()
            elif path.startswith("/health"):
                report = self.health()
                status = "200 OK" if report.get("ok") else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(report, indent=1)
            else:
                status, ctype, body = "404 Not Found", "text/plain", "try /metrics or /health\n"
            data = body.encode()
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
