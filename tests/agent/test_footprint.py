"""The agent's footprint: a plain Modbus site never imports what it does not use.

``edge-agent run`` runs as on site (``python -v -m agent run``: the interpreter itself lists every
module the process loads, at start-up and later) against an emulated meter, a private Mosquitto and
the reference receiver; once the receiver holds the meter's signed readings, the agent is stopped and
its import list checked. Nothing in the agent is changed for the test. The process checks the config
with the pydantic models, then execs the running agent in the same PID (``agent/handover.py``): the
log holds both interpreters' lists, and the running agent's must hold no config model.
"""

from __future__ import annotations

import ast
import asyncio
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.modbus.emulator import EmulatedDevice, Emulator
from drivers.modbus.profile import load_profile
from sync.signing import ensure_keypair
from tests.brokers import mosquitto  # noqa: F401 - fixture
from tests.conftest import agent_argv, agent_env
from tests.sync.conftest import (  # noqa: F401 - fixtures
    SITE,
    receivers,
    site_keys,
    sqlite_url,
    stored_readings,
    wait_for,
)

# Never in a meter site's process: the camera and model stack (tens of MB), and cryptography (its
# own OpenSSL: Ed25519 goes through the interpreter's libcrypto; X.509 only with certificates).
HEAVY = ("numpy", "cv2", "ai_edge_litert", "tflite_runtime", "cryptography", "aiohttp", "jinja2")
# Config sections the site does not have: their models stay out too.
ABSENT_SECTIONS = (
    "control.lighting.config",
    "control.traffic.config",
    "agent.localpage.config",
    "models.config",
)
# Not needed by a TCP-only site that serves no /metrics: pyserial, prometheus_client (and its
# http.server), click (``run --config`` starts without it), ctypes.util (find_library runs ldconfig
# in a subprocess).
UNUSED = ("serial", "prometheus_client", "kernel.metrics_export", "http.server", "click", "ctypes.util")
# ``python -v`` names every module a process loads, ``importlib.import_module`` included (the kinds).
_IMPORT_LINE = re.compile(r"^import '([\w.]+)' # ", re.M)
_INTERPRETER_START = "# installing zipimport hook"
# The centre's side of the wire: the pydantic wire models (the agent decodes and encodes with
# msgspec, sync/wire_msgs.py), the site registry's models and the receiver.
CENTRE_ONLY = ("sync.wire", "sync.registry_file", "sync.receiver", "sync.receiver_decode")
_ROOT = Path(__file__).resolve().parents[2]
_OURS = ("kernel", "drivers", "sync", "models", "control", "agent")


def _module_imports_pydantic(module: str) -> bool:
    """Whether ``module``'s source imports pydantic when it is imported (``TYPE_CHECKING`` blocks and
    imports inside functions do not count)."""
    path = _ROOT.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    body = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            body.extend(node.orelse)
        elif isinstance(node, ast.If | ast.Try):
            body.extend([*node.body, *node.orelse, *getattr(node, "finalbody", [])])
        elif (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").split(".")[0] in ("pydantic", "pydantic_core")
        ) or (
            isinstance(node, ast.Import)
            and any(a.name.split(".")[0] in ("pydantic", "pydantic_core") for a in node.names)
        ):
            return True
    return False


def _processes(log: str) -> tuple[set[str], set[str]]:
    """Modules imported by the checking process and by the running agent it execs (``-v`` logs each
    interpreter's start)."""
    parts = [set(_IMPORT_LINE.findall(part)) for part in log.split(_INTERPRETER_START)[1:]]
    assert len(parts) in (1, 2), f"{len(parts)} interpreters in one agent's import log"
    return parts[0], (parts[1] if len(parts) == 2 else set())


@pytest.fixture
def meter_port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    emu = Emulator()
    device = EmulatedDevice(load_profile("eastron-sdm120"), 1, seed=1)
    yield asyncio.run_coroutine_threadsafe(emu.add_tcp([device]), loop).result(10)
    asyncio.run_coroutine_threadsafe(emu.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def meter_site(meter_port: int, store: Path, health: str | None = None) -> dict[str, Any]:
    """The config of a site with one emulated SDM120 meter on ``meter_port`` (no uplink)."""
    return {
        "site": {"id": SITE, "name": "Meters", "location": {"lat": 21.18, "lon": 106.07}},
        "devices": [
            {
                "driver": "modbus",
                "name": "meter-1",
                "profile": "eastron-sdm120",
                "unit": 1,
                "line": {"type": "tcp", "host": "127.0.0.1", "port": meter_port},
                "poll": {"fast_s": 0.5, "slow_s": 2.0},
            }
        ],
        "store": {"path": str(store)},
        "health": {"listen": health},
    }


def _run_meter_site(mosquitto, tmp_path, site_keys, sqlite_url, receivers, meter_port) -> str:  # noqa: F811
    """``edge-agent run`` of a Modbus site until the receiver holds its readings: its ``python -v`` log."""
    receivers(mosquitto, sqlite_url, site_keys.registry).wait_subscribed()
    cfg = meter_site(meter_port, tmp_path / "agent-store.db")
    cfg["sync"] = {
        "broker": mosquitto.url,
        "allow_plaintext": True,
        "centre_public_keys": [str(site_keys.key.parent / "centre.pub")],
        "signing_key_file": str(site_keys.key),
        "batch": {"max_age_s": 0.2},
    }
    ensure_keypair(site_keys.key.parent, "centre")  # the receiver signs its acks with it
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    err = tmp_path / "agent.err"
    with open(err, "wb") as out:
        proc = subprocess.Popen(
            [agent_argv()[0], "-v", *agent_argv("run", "--config", str(path))[1:]],
            env=agent_env(),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        wait_for(
            lambda: sum(1 for r in stored_readings(sqlite_url) if r[2] == "meter-1") >= 30,
            60,
            "the meter's signed readings at the receiver",
        )
        time.sleep(1.0)  # the receiver's signed acks for those batches come back and are verified
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return err.read_text(errors="replace")


def test_a_modbus_site_process_imports_nothing_heavy(
    mosquitto, tmp_path, site_keys, sqlite_url, receivers, meter_port  # noqa: F811
) -> None:
    log = _run_meter_site(mosquitto, tmp_path, site_keys, sqlite_url, receivers, meter_port)
    imported = set(_IMPORT_LINE.findall(log))
    assert "drivers.modbus.client" in imported, "the import list was not captured"
    # The process checks the config, then execs the running agent (same PID): each prints its own list.
    checking, running = _processes(log)
    assert {"pydantic", "agent.config", "drivers.modbus.config"} <= checking, "the config was not checked"
    assert "drivers.modbus.client" in running, "the running agent was not exec'ed after the check"
    # No module of the running agent imports pydantic.
    on_pydantic = sorted(m for m in running if m.split(".")[0] in _OURS and _module_imports_pydantic(m))
    assert on_pydantic == [], f"the running agent imports modules that import pydantic: {on_pydantic}"
    config_models = sorted(
        running
        & {
            "agent.config",
            "sync.config",
            "kernel.site_config",
            "drivers.modbus.config",
            "drivers.modbus.profile",
            "drivers.transports.config",
        }
    )
    assert config_models == [], f"the running agent imported the config models {config_models}"
    assert "sync.ed25519" in imported  # the signatures went through the light signer
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == [], f"a meter site imported {heavy}"
    sections = sorted(imported.intersection(ABSENT_SECTIONS))
    assert sections == [], f"a site without those sections imported {sections}"
    unused = sorted(m for m in imported if m in UNUSED or m.split(".")[0] in ("serial", "prometheus_client", "click"))
    assert unused == [], f"a TCP meter site imported {unused}"
    assert "sync.wire_msgs" in running  # acks, commands, status and replies went through msgspec
    centre = sorted(running.intersection(CENTRE_ONLY))
    assert centre == [], f"the agent imported the centre's side of the wire: {centre}"


def test_the_running_agent_of_a_modbus_site_never_imports_pydantic(
    mosquitto, tmp_path, site_keys, sqlite_url, receivers, meter_port  # noqa: F811
) -> None:
    """Not pydantic, not pydantic_core, at any time in the running agent (the checking process before
    the exec validates the config with them)."""
    _checking, running = _processes(
        _run_meter_site(mosquitto, tmp_path, site_keys, sqlite_url, receivers, meter_port)
    )
    assert "drivers.modbus.client" in running, "the running agent was not exec'ed after the check"
    on_pydantic = sorted(m for m in running if m.split(".")[0] in ("pydantic", "pydantic_core"))
    assert on_pydantic == [], f"the running agent imported {on_pydantic[:5]} ({len(on_pydantic)} modules)"


def test_libc_is_opened_by_soname_without_searching(monkeypatch) -> None:
    import ctypes.util

    from agent.app import limit_malloc_arenas
    from kernel.clock import kernel_clock_synced

    def no_search(name: str) -> str | None:
        raise AssertionError(f"find_library({name!r}) starts a subprocess at every agent start")

    monkeypatch.setattr(ctypes.util, "find_library", no_search)
    assert limit_malloc_arenas(2) is True
    assert kernel_clock_synced() in (True, False)


def test_the_clock_check_opens_libc_once_however_often_it_asks(monkeypatch) -> None:
    import ctypes

    from kernel.clock import kernel_clock_synced
    from kernel.libc import load_libc

    opened: list[str] = []
    real = ctypes.CDLL

    def counting(name: str, *args: object, **kwargs: object) -> ctypes.CDLL:
        opened.append(name)
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    load_libc.cache_clear()
    monkeypatch.setattr(ctypes, "CDLL", counting)
    try:
        results = {kernel_clock_synced() for _ in range(5)}  # the agent asks every 30 s
    finally:
        load_libc.cache_clear()
    assert results <= {True, False}
    assert opened == ["libc.so.6"]  # each CDLL is a new function-pointer class for the collector
