"""Power cuts during updates: the real agent is SIGKILLed from outside at random moments while it
stages, switches to, restarts into and watches a new version, 20 times.

After every kill the site's update folder must select a whole version (the pointer names a version
whose config validates, the journal reads), the next start must finish or undo what was interrupted,
and at the end the receiver holds every reading the store ever accepted, each exactly once.

Real parts: a private Mosquitto, the reference receiver on SQLite, a Modbus TCP emulator, the agent
as a subprocess; updates alternate between config patches and model updates (slower to stage).
"""

from __future__ import annotations

import base64
import hashlib
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import yaml

from agent.config import parse_config
from agent.update.journal import load_journal
from agent.update.versions import CONFIG_NAME, Versions
from models.config import PACKAGED_MODELS
from tests.brokers import Mosquitto
from tests.conftest import agent_argv, agent_env
from tests.e2e.test_crash_safety import _store_state
from tests.sync.conftest import query, wait_for
from tests.update.conftest import Centre, site_config, write_config

SITE = "bn-kill-01"
KILLS = 20


def _model_body(version: int) -> dict:
    manifest = yaml.safe_load((PACKAGED_MODELS / "irrigation_need.yaml").read_text())
    content = (PACKAGED_MODELS / "irrigation_need.tflite").read_bytes()
    return {"type": "model", "version": version, "watch_s": 1.0,
            "model": {"manifest": {**manifest, "version": f"1.0.{version}"},
                      "content_b64": base64.b64encode(content).decode(),
                      "sha256": hashlib.sha256(content).hexdigest()}}  # fmt: skip


def _check_whole(work: Path, cfg_path: Path) -> int:
    """The version the pointer selects is whole and valid; the journal reads. Returns the version."""
    versions = Versions(work / "updates", cfg_path)
    load_journal(versions.journal_path)
    current = versions.current()
    pointer = work / "updates" / "current"
    if pointer.is_symlink():
        assert current != 0, f"the pointer {pointer.readlink()} names no whole version"
        assert (versions.path(current) / CONFIG_NAME).is_file()
    parse_config(versions.raw(current), "check", cfg_path.parent)
    return current


def test_sigkill_during_updates_leaves_a_whole_version_and_loses_nothing(
    tmp_path: Path, keys, meters, receivers
) -> None:
    rng = random.Random(20261206)
    work = tmp_path / "site"
    work.mkdir()
    keys.registry.write_text(f"sites:\n  {SITE}:\n    public_keys: [{keys.site_pub}]\n")
    db_url = f"sqlite:///{tmp_path / 'centre.db'}"
    store_path = work / "store.db"
    with Mosquitto(tmp_path / "broker") as broker:
        rx = receivers(broker, db_url, keys.registry)
        rx.wait_subscribed()
        v0 = site_config(SITE, broker.url, keys, work, meters.port)
        cfg_path = write_config(work / "site.yaml", v0)
        hq = Centre(broker.port, SITE, keys.centre, keys.site_pub)
        log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115
        proc: subprocess.Popen[bytes] | None = None
        seen_versions = []
        try:
            for i in range(KILLS):
                n_online = sum(1 for s in hq.statuses if s.state == "online")
                proc = subprocess.Popen(agent_argv("run", "--config", str(cfg_path)), env=agent_env(),
                                        stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
                wait_for(lambda n=n_online: sum(1 for s in hq.statuses if s.state == "online") > n, 60,
                         f"the agent online (start {i + 1})")  # fmt: skip
                # A watch interrupted by the last kill runs again now; let it end so this update is taken.
                wait_for(lambda: load_journal(work / "updates" / "journal.json").state == "idle", 30,
                         "the interrupted watch to end")  # fmt: skip
                version = 100 + i
                if i % 2:
                    body = _model_body(version)
                else:
                    fast = 0.1 + 0.01 * (i % 5)
                    devices = [{**v0["devices"][0], "poll": {"fast_s": fast, "slow_s": 1}}]
                    body = {"type": "config", "version": version, "config": {**v0, "devices": devices},
                            "watch_s": 1.0}  # fmt: skip
                hq.send(hq.frame(hq.command(f"u-{i}", body)))
                time.sleep(rng.uniform(0.0, 0.6))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                seen_versions.append(_check_whole(work, cfg_path))
            assert len(set(seen_versions)) > 5, f"updates were applied between kills: {seen_versions}"

            # One undisturbed run finishes what was interrupted, drains the store, stops cleanly.
            proc = subprocess.Popen(agent_argv("run", "--config", str(cfg_path)), env=agent_env(),
                                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            try:
                wait_for(lambda: load_journal(work / "updates" / "journal.json").state == "idle", 30,
                         "the last watch to end")  # fmt: skip
                before = _store_state(store_path)[0]
                wait_for(lambda: _store_state(store_path)[0] > before, 30, "the agent to acquire")
                wait_for(lambda: _store_state(store_path)[1] < 50, 60, "the store to drain")
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(30)
            assert code == 0, (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
            _check_whole(work, cfg_path)
        finally:
            hq.close()
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()
        time.sleep(1.0)
    last_seq, waiting = _store_state(store_path)
    assert waiting == 0
    seqs = [int(s) for (s,) in query(db_url, f"SELECT seq FROM readings WHERE site_id = '{SITE}' ORDER BY seq")]
    assert seqs == list(range(1, last_seq + 1)), "every accepted reading arrived, exactly once"
    keys_ = query(db_url, "SELECT device, point, ts FROM readings WHERE device LIKE 'meter-%'")
    assert [k for k, n in Counter(keys_).items() if n > 1] == []
