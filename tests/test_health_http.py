"""kernel/health_http.py: the /metrics and /health endpoint the agent and the receiver share."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from kernel.errors import AgentError
from kernel.health_http import HealthServer, ThreadedHealthServer, respond
from kernel.metrics import CONTENT_TYPE


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_routes_metrics_health_and_anything_else() -> None:
    report = {"ok": True, "n": 1}
    assert respond("/metrics", lambda: "a 1\n", lambda: report) == ("200 OK", CONTENT_TYPE, b"a 1\n")
    assert respond("/metrics?x", lambda: b"b 2\n", lambda: report)[2] == b"b 2\n"  # bytes pass through
    assert respond("/health", lambda: "", lambda: report) == (
        "200 OK", "application/json", json.dumps(report, indent=1).encode()
    )
    assert respond("/healthz", lambda: "", lambda: {"ok": False})[0] == "503 Service Unavailable"
    assert respond("/", lambda: "", lambda: report) == ("404 Not Found", "text/plain", b"try /metrics or /health\n")


def test_threaded_server_serves_until_stopped_and_ends_its_thread() -> None:
    state = {"ok": True}
    http = ThreadedHealthServer(HealthServer("127.0.0.1:0", lambda: b"m 1\n", lambda: dict(state)), "t-health")
    http.start()
    try:
        assert http.port > 0
        assert _get(http.port, "/metrics") == (200, CONTENT_TYPE, b"m 1\n")
        assert _get(http.port, "/health")[0] == 200
        state["ok"] = False
        code, ctype, body = _get(http.port, "/health")
        assert (code, ctype, json.loads(body)) == (503, "application/json", {"ok": False})
        assert _get(http.port, "/nope")[0] == 404
    finally:
        http.stop()
    assert "t-health" not in {t.name for t in threading.enumerate()}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http.port), timeout=1).close()


def test_a_taken_address_is_one_line_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        http = ThreadedHealthServer(HealthServer(f"127.0.0.1:{port}", str, dict, name="health endpoint", hint=" (!)"))
        with pytest.raises(AgentError, match=rf"^health endpoint 127.0.0.1:{port}: cannot listen: Address already in use \(!\)$"):
            http.start()
        http.stop()  # after a failed start: nothing left to stop, and no error
