"""Signed updates end to end, through the real agent: refused before anything changes (bad signature,
target, expiry, invalid config, a model whose tensors differ from its manifest, replay, downgrade), committed
after a healthy watch, rolled back by the agent itself when polling breaks.

Real parts: a private Mosquitto, the reference receiver on SQLite, a Modbus TCP emulator with two
SDM120 meters, the agent as a subprocess (``edge-agent run``), and a paho client signing updates as
the centre does.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import yaml
from click.testing import CliRunner

from agent.cli import cli
from agent.update.merge import make_merge_patch
from kernel.clock import Clock
from kernel.readings import ClockQuality
from models.config import PACKAGED_MODELS
from sync.wire import pack_frame, unpack_frame
from tests.brokers import Mosquitto
from tests.conftest import agent_argv, agent_env, free_port
from tests.sync.conftest import query, wait_for
from tests.update.conftest import Centre, site_config, write_config

SITE = "bn-upd-01"


def test_updates_refused_committed_and_rolled_back(tmp_path: Path, keys, meters, receivers) -> None:
    work = tmp_path / "site"
    work.mkdir()
    keys.registry.write_text(f"sites:\n  {SITE}:\n    public_keys: [{keys.site_pub}]\n")
    db_url = f"sqlite:///{tmp_path / 'centre.db'}"
    with Mosquitto(tmp_path / "broker") as broker:
        rx = receivers(broker, db_url, keys.registry)
        rx.wait_subscribed()
        v0 = site_config(SITE, broker.url, keys, work, meters.port)
        cfg_path = write_config(work / "site.yaml", v0)
        log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(agent_argv("run", "--config", str(cfg_path)), env=agent_env(),
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        hq = Centre(broker.port, SITE, keys.centre, keys.site_pub)
        try:
            # Wrongly targeted: refused. Resent until the agent is up and answers.
            wrong = hq.frame(hq.command("wrong-target", {"type": "release", "version": 9, "release": "x"},
                                        target="bn-other-02"))  # fmt: skip
            deadline = time.monotonic() + 60
            while not hq.replies_to("wrong-target"):
                assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()[-3000:]
                hq.send(wrong)
                time.sleep(0.5)
            assert hq.reply("wrong-target").outcome == "refused"

            # Unsigned, forged, expired: refused.
            unsigned = hq.command("unsigned", {"type": "release", "version": 9, "release": "x"})
            hq.send(pack_frame(unpack_frame(hq.frame(unsigned)).payload, msg_id="unsigned"))
            assert hq.reply("unsigned").outcome == "refused"
            hq.send(hq.frame(hq.command("forged", {"type": "release", "version": 9, "release": "x"}), keys.rogue))
            assert hq.reply("forged").outcome == "refused"
            # One expiry policy (docs/wire-protocol.md), the router's: refused on a trusted clock; on an
            # unsynchronised one the router lets it through (expiry not checked) and the update manager
            # decides: this body (a "rollback" to a version not older than the running 0) it refuses.
            expired = hq.command("expired", {"type": "config", "version": 9, "rollback": True}).model_copy(
                update={"issued_at": time.time() - 600, "expires_at": time.time() - 300}
            )
            hq.send(hq.frame(expired))
            late = hq.reply("expired")
            assert late.outcome == "refused"
            if Clock().quality() == ClockQuality.UNSYNCED:
                assert "not older than 0" in late.reason, late.reason
            else:
                assert "expired" in late.reason
            assert not (work / "updates" / "current").exists()

            # A config that fails `config check` is refused before anything changes.
            bad = {**v0, "devices": [{**v0["devices"][0], "unit": 999}]}
            hq.send(hq.frame(hq.command("invalid", {"type": "config", "version": 1, "config": bad})))
            invalid = hq.reply("invalid")
            assert invalid.outcome == "refused"
            assert "devices[0].unit" in invalid.reason
            assert not (work / "updates" / "current").exists()

            # A model whose manifest does not match its tensors: refused, nothing changed.
            manifest = yaml.safe_load((PACKAGED_MODELS / "irrigation_need.yaml").read_text())
            content = (PACKAGED_MODELS / "irrigation_need.tflite").read_bytes()
            manifest["outputs"][0]["shape"] = [1, 2]
            model = {"manifest": manifest, "content_b64": base64.b64encode(content).decode(),
                     "sha256": hashlib.sha256(content).hexdigest()}  # fmt: skip
            hq.send(hq.frame(hq.command("bad-model", {"type": "model", "version": 1, "model": model})))
            bad_model = hq.reply("bad-model")
            assert bad_model.outcome == "refused"
            assert "tensors do not match" in bad_model.reason
            assert not (work / "updates" / "current").exists()

            # A good merge patch: a second meter. Staged, switched, watched, committed.
            v1 = {**v0, "devices": [*v0["devices"], {**v0["devices"][0], "name": "meter-2", "unit": 2}]}
            patch = make_merge_patch(v0, v1)
            t_publish = time.monotonic()
            good = hq.frame(hq.command("good-1", {"type": "config", "version": 1, "patch": patch,
                                                  "base_version": 0, "watch_s": 4}))  # fmt: skip
            hq.send(good)
            staged = hq.reply("good-1", phase="staged")
            assert staged.outcome == "accepted", staged.reason
            committed = hq.reply("good-1", timeout=40, phase="committed")
            assert committed.outcome == "accepted", committed.reason
            assert time.monotonic() - t_publish < 30
            assert (work / "updates" / "current").readlink().as_posix() == "versions/1"
            wait_for(lambda: any(s.config_version == 1 and s.update_state == "idle" for s in hq.statuses),
                     20, "a status saying version 1")  # fmt: skip
            wait_for(lambda: bool(query(db_url, "SELECT 1 FROM readings WHERE device = 'meter-2'")), 20,
                     "readings of meter-2")  # fmt: skip

            # Replay of the same frame, and the same version under a new id: refused.
            hq.send(good)
            wait_for(lambda: len(hq.replies_to("good-1")) >= 3, 20, "the replay's reply")
            assert hq.replies_to("good-1")[-1].outcome == "refused"
            hq.send(hq.frame(hq.command("again-1", {"type": "config", "version": 1, "config": v1})))
            assert "not newer" in hq.reply("again-1").reason

            # A config that breaks polling (both meters on a closed port): rolled back within its window.
            dead = free_port()
            v2 = {**v1, "devices": [{**d, "line": {**d["line"], "port": dead}} for d in v1["devices"]]}
            # Sent with the operator's tool this time: edge-agent centre send ... config FILE.
            v2_file = write_config(tmp_path / "v2.yaml", v2)
            t_publish = time.monotonic()
            out = CliRunner().invoke(cli, [
                "centre", "send", "--broker", broker.url, "--allow-plaintext", "--key", str(tmp_path / "keys" / "centre.key"),
                "--sites", str(keys.registry), "--site", SITE, "--wait", "40", "config", str(v2_file), "--version", "2",
                "--watch", "15",
            ])  # fmt: skip
            assert out.exit_code == 0, out.output
            bad_id = out.output.split()[3]
            assert f"{bad_id} failed rolled-back rolled back to version 1: device meter-" in out.output, out.output
            assert hq.reply(bad_id, phase="staged").outcome == "accepted"
            rolled = hq.reply(bad_id, timeout=60, phase="rolled-back")
            assert rolled.outcome == "failed"
            assert "meter-" in rolled.reason, rolled.reason
            assert time.monotonic() - t_publish < 15 + 10, "rolled back within the watch window"
            assert (work / "updates" / "current").readlink().as_posix() == "versions/1"
            assert (work / "updates" / "failed" / "2" / "site.json").exists(), "the failed version is kept aside"

            # A downgrade not signed as a rollback: refused. A signed rollback to version 0: committed.
            hq.send(hq.frame(hq.command("down-1", {"type": "config", "version": 1, "config": v1})))
            assert hq.reply("down-1").outcome == "refused"
            wait_for(lambda: bool(query(db_url, "SELECT 1 FROM readings WHERE device = 'agent' AND point = 'update'"
                                               " AND value_text = 'rolled_back'")), 20, "the rollback event")  # fmt: skip
        finally:
            hq.close()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            log.close()
        assert code == 0, (tmp_path / "agent.log").read_text()[-3000:]
        time.sleep(1.0)
    seqs = [int(s) for (s,) in query(db_url, f"SELECT seq FROM readings WHERE site_id = '{SITE}' ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)), "no reading lost across two restarts"
    keys_ = query(db_url, "SELECT device, point, ts FROM readings WHERE device LIKE 'meter-%'")
    assert [k for k, n in Counter(keys_).items() if n > 1] == [], "no reading stored twice"
