"""The agent's footprint: a plain Modbus site never imports what it does not use.

``edge-agent run`` runs as on site (``python -X importtime -m agent run``: the interpreter itself
lists every import the process makes, at start-up and later) against an emulated meter, a private
Mosquitto and the reference receiver; once the receiver holds the meter's signed readings, the
agent is stopped and its import list checked. Nothing in the agent is changed for the test.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

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
# The centre's side of the wire: the pydantic wire models (the agent decodes and encodes with
# msgspec, sync/wire_msgs.py), the site registry's models and the receiver.
CENTRE_ONLY = ("sync.wire", "sync.registry_file", "sync.receiver", "sync.receiver_decode")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.M)


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


def test_a_modbus_site_process_imports_nothing_heavy(
    mosquitto, tmp_path, site_keys, sqlite_url, receivers, meter_port  # noqa: F811
) -> None:
    receivers(mosquitto, sqlite_url, site_keys.registry).wait_subscribed()
    cfg = {
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
        "sync": {
            "broker": mosquitto.url,
            "allow_plaintext": True,
            "centre_public_keys": [str(site_keys.key.parent / "centre.pub")],
            "signing_key_file": str(site_keys.key),
            "batch": {"max_age_s": 0.2},
        },
        "store": {"path": str(tmp_path / "agent-store.db")},
        "health": {"listen": None},
    }
    ensure_keypair(site_keys.key.parent, "centre")  # the receiver signs its acks with it
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    err = tmp_path / "agent.err"
    with open(err, "wb") as out:
        proc = subprocess.Popen(
            [agent_argv()[0], "-X", "importtime", *agent_argv("run", "--config", str(path))[1:]],
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
    imported = set(_IMPORT_LINE.findall(err.read_text(errors="replace")))
    assert "drivers.modbus.client" in imported, "the import list was not captured"
    assert "sync.ed25519" in imported  # the signatures went through the light signer
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == [], f"a meter site imported {heavy}"
    sections = sorted(imported.intersection(ABSENT_SECTIONS))
    assert sections == [], f"a site without those sections imported {sections}"
    unused = sorted(m for m in imported if m in UNUSED or m.split(".")[0] in ("serial", "prometheus_client", "click"))
    assert unused == [], f"a TCP meter site imported {unused}"
    assert "sync.wire_msgs" in imported  # acks, commands, status and replies went through msgspec
    centre = sorted(imported.intersection(CENTRE_ONLY))
    assert centre == [], f"the agent imported the centre's side of the wire: {centre}"


def test_libc_is_opened_by_soname_without_searching(monkeypatch) -> None:
    import ctypes.util

    from agent.app import limit_malloc_arenas
    from kernel.clock import kernel_clock_synced

    def no_search(name: str) -> str | None:
        raise AssertionError(f"find_library({name!r}) starts a subprocess at every agent start")

    monkeypatch.setattr(ctypes.util, "find_library", no_search)
    assert limit_malloc_arenas(2) is True
    assert kernel_clock_synced() in (True, False)
