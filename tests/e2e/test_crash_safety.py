"""Crash safety end to end: the agent is SIGKILLed at random moments during acquisition and sync.

Real parts: a Modbus TCP emulator (three SDM120 meters polled every 100 ms), a private Mosquitto,
the reference receiver on SQLite, and the agent as a subprocess killed 20 times. Afterwards the
receiver must hold every sequence number the agent's store ever accepted, each exactly once, and no
reading twice under two sequence numbers.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.modbus.emulator import EmulatedDevice, Emulator
from drivers.modbus.profile import load_profile
from sync.store import last_issued_seq, waiting_readings
from tests.brokers import Mosquitto
from tests.conftest import agent_argv, agent_env
from tests.sync.conftest import SITE, query, wait_for

KILLS = 20


class _EmulatorThread:
    """A Modbus TCP emulator running on its own event loop in a thread."""

    def __init__(self, units: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.emu = Emulator()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        profile = load_profile("eastron-sdm120")
        devices = [EmulatedDevice(profile, unit, seed=unit) for unit in range(1, units + 1)]
        self.port = asyncio.run_coroutine_threadsafe(self.emu.add_tcp(devices), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.emu.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def emulator() -> Iterator[_EmulatorThread]:
    emu = _EmulatorThread(3)
    yield emu
    emu.close()


def _store_state(path: Path) -> tuple[int, int]:
    """(last seq ever issued, rows still waiting) of the agent's store, read beside the running agent."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return last_issued_seq(db), waiting_readings(db)
    except sqlite3.OperationalError:  # the agent has created the file but not its tables yet
        return 0, 0
    finally:
        db.close()


def test_sigkill_twenty_times_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, emulator: _EmulatorThread, site_keys, receivers
) -> None:
    rng = random.Random(20261122)
    db_url = f"sqlite:///{tmp_path / 'centre.db'}"
    store_path = tmp_path / "agent" / "store.db"
    with Mosquitto(tmp_path / "broker") as broker:
        rx = receivers(broker, db_url, site_keys.registry)
        rx.wait_subscribed()
        cfg = tmp_path / "site.yaml"
        devices = "\n".join(
            f"  - {{driver: modbus, name: meter-{u}, profile: eastron-sdm120, unit: {u}, "
            f"line: {{type: tcp, host: 127.0.0.1, port: {emulator.port}}}, poll: {{fast_s: 0.1, slow_s: 1}}}}"
            for u in (1, 2, 3)
        )
        cfg.write_text(
            f"site: {{id: {SITE}, name: Crash test, location: {{lat: 21.18, lon: 106.07}}}}\n"
            f"devices:\n{devices}\n"
            f"sync: {{broker: {broker.url}, allow_plaintext: true, centre_public_keys: [{site_keys.centre_pub}],"
            f" signing_key_file: {site_keys.key}, keepalive_s: 5,"
            f" ack_timeout_s: 3, batch: {{max_age_s: 0.2, max_count: 500}}}}\n"
            f"store: {{path: {store_path}, commit_interval_s: 0.02}}\n"
            "health: {listen: null}\n"
        )
        log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115
        proc: subprocess.Popen[bytes] | None = None
        try:
            lasts = []
            for _ in range(KILLS):
                proc = subprocess.Popen(
                    agent_argv("run", "--config", str(cfg)),
                    env=agent_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                # Let it start acquiring (the store moves on), then kill it at a random moment of
                # acquisition, upload or ack handling.
                before = _store_state(store_path)[0] if store_path.exists() else 0
                wait_for(
                    lambda b=before: store_path.exists() and _store_state(store_path)[0] > b,
                    60,
                    "the agent to accept readings",
                    step=0.05,
                )
                time.sleep(rng.uniform(0.0, 1.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                if store_path.exists():
                    lasts.append(_store_state(store_path)[0])
            assert lasts[-1] > 200, "the agent should have accepted a good number of readings between kills"
            assert lasts == sorted(lasts), "sequence numbers never go back across crashes"
            # One last, undisturbed run drains the store; then a clean stop.
            proc = subprocess.Popen(
                agent_argv("run", "--config", str(cfg)), env=agent_env(), stdout=log, stderr=subprocess.STDOUT
            )
            try:
                before = _store_state(store_path)[0]
                wait_for(lambda: _store_state(store_path)[0] > before, 60, "the agent to start", step=0.05)
                wait_for(lambda: _store_state(store_path)[1] < 50, 90, "the store to drain")
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(30)
            tail = (tmp_path / "agent.log").read_text(errors="replace").splitlines()[-30:]
            assert code == 0, "\n".join(tail)
        finally:
            if proc is not None and proc.poll() is None:  # a failed wait must not leave an agent behind
                proc.kill()
                proc.wait(10)
            log.close()
        last_seq, waiting = _store_state(store_path)
        assert waiting == 0, "a clean stop flushes the uplink: nothing left unacknowledged"
        seqs = [
            int(s)
            for (s,) in query(db_url, f"SELECT seq FROM readings WHERE site_id = '{SITE}' ORDER BY seq")
        ]
        # Every accepted reading arrived, exactly once: the store's seqs are contiguous from 1.
        assert seqs == list(range(1, last_seq + 1))
        # No reading was stored twice under two sequence numbers.
        keys = query(db_url, "SELECT device, point, ts FROM readings WHERE device LIKE 'meter-%'")
        dupes = [k for k, n in Counter(keys).items() if n > 1]
        assert dupes == []
        starts = query(db_url, "SELECT COUNT(*) FROM readings WHERE device = 'agent' AND point = 'started'")
        assert starts[0][0] == KILLS + 1
