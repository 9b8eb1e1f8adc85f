"""The balena device image, linted: it cannot be built here (every base image comes from a container
registry, and this machine reaches only PyPI, Debian and npm), so the Dockerfiles are parsed with
the official buildkit parser (the ``dockerfile`` package) and checked against the image's rules.
The container HEALTHCHECK probe runs against a real agent in test_fleet_balena.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dockerfile
import pytest
import tomllib
import yaml

from agent.healthcheck import check, probe_url
from hil.procs import REPO

DOCKERFILES = ["Dockerfile.template", "Dockerfile.jetson-orin-nano-devkit-nvme"]
FORBIDDEN = ("tensorflow", "sumo", "balena-sdk", "balena_sdk", "[dev]", "[operator]", "[train]", ".[")


def final_stage(path: Path) -> list[dockerfile.Command]:
    cmds = dockerfile.parse_file(str(path))
    last_from = max(i for i, c in enumerate(cmds) if c.cmd == "FROM")
    return list(cmds[last_from:])


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_rules(name: str) -> None:
    path = REPO / name
    cmds = dockerfile.parse_file(str(path))
    froms = [c.value[0] for c in cmds if c.cmd == "FROM"]
    assert froms, "no FROM"
    assert all("%%BALENA_MACHINE_NAME%%" in f for f in froms if "/" in f), froms
    runs = " ".join(" ".join(c.value) for c in cmds if c.cmd == "RUN")
    # The device set only: `pip install .`, never an extra or a heavy tool.
    assert "pip install --no-cache-dir ." in runs
    installs = [part for part in runs.split("&&") if "pip install" in part]
    for part in installs:
        assert not any(bad in part for bad in FORBIDDEN), part
    final = final_stage(path)
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users, "the final stage must set a non-root USER"
    assert users[-1] not in ("root", "0")
    health = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert len(health) == 1
    assert health[0].value[0] == "CMD"
    assert "agent.healthcheck" in " ".join(health[0].value)
    cmd = next(c for c in reversed(final) if c.cmd == "CMD")
    assert "edge-agent run --config" in " ".join(cmd.value)
    env = " ".join(" ".join(c.value) for c in final if c.cmd == "ENV")
    assert "KBE_CONFIG /data/site.yaml" in env or "KBE_CONFIG=/data/site.yaml" in env


def test_jetson_image_is_on_l4t() -> None:
    cmds = dockerfile.parse_file(str(REPO / "Dockerfile.jetson-orin-nano-devkit-nvme"))
    runs = " ".join(" ".join(c.value) for c in cmds if c.cmd == "RUN")
    assert "repo.download.nvidia.com/jetson" in runs
    assert "nvidia-l4t-core" in runs
    assert cmds[0].value[0].endswith("-ubuntu:jammy-run")  # JetPack 6 is Ubuntu 22.04


def test_compose_release() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    agent = compose["services"]["agent"]
    assert agent["build"] == "."
    assert agent["labels"]["io.balena.features.balena-api"] == "1"
    assert "kbe-data:/data" in agent["volumes"]
    assert agent["environment"]["KBE_CONFIG"] == "/data/site.yaml"
    assert "no-new-privileges:true" in agent["security_opt"]
    assert agent["read_only"] is True
    assert agent["network_mode"] == "host"  # the local page on the cabinet's address
    assert "user" not in agent or agent["user"] not in ("root", "0")
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"tests", ".git", ".venv"} <= set(ignored)


def test_device_set_and_shipped_service_files() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    device = " ".join(meta["project"]["dependencies"]).lower()
    assert not any(bad in device for bad in ("tensorflow", "sumo", "balena"))
    assert any(d.startswith("balena-sdk") for d in meta["project"]["optional-dependencies"]["operator"])
    data = meta["tool"]["setuptools"]["package-data"]["provisioning"]
    assert {"systemd/*.service", "systemd/*.conf"} <= set(data)
    unit = (REPO / "provisioning/systemd/edge-agent.service").read_text()
    users = (REPO / "provisioning/systemd/kinhbac-edge.conf").read_text()
    assert "User=kbe" in unit
    assert "SupplementaryGroups=dialout gpio" in unit
    entries = [line.split() for line in users.splitlines() if line and not line.startswith("#")]
    assert entries[0][:3] == ["u", "kbe", "-"]
    assert entries[0][-2:] == ["/var/lib/kinhbac-edge", "/usr/sbin/nologin"]
    assert ["m", "kbe", "dialout"] in entries
    assert ["m", "kbe", "gpio"] in entries


def test_healthcheck_reads_the_port_from_the_site_config(tmp_path: Path) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text("site: {id: x}\n")
    assert probe_url(cfg) == "http://127.0.0.1:9108/health"
    cfg.write_text("health: {listen: '0.0.0.0:9200'}\n")
    assert probe_url(cfg) == "http://127.0.0.1:9200/health"
    cfg.write_text("health: {listen: '[::]:9201'}\n")
    assert probe_url(cfg) == "http://[::1]:9201/health"
    cfg.write_text("health: {listen: null}\n")
    assert probe_url(cfg) is None


def test_healthcheck_fails_on_a_not_ok_agent_and_a_dead_port(tmp_path: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"ok": False, "tasks": {"source:rs485": {"state": "cooling-down"}}}).encode()
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        cfg = tmp_path / "site.yaml"
        cfg.write_text(f"health: {{listen: '127.0.0.1:{port}'}}\n")
        healthy, line = check(cfg)
        assert not healthy
        assert line.endswith("not ok (source:rs485 cooling down)")
    finally:
        server.shutdown()
        server.server_close()
    proc = subprocess.run(
        [sys.executable, "-m", "agent.healthcheck", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"http://127.0.0.1:{port}/health: ")
