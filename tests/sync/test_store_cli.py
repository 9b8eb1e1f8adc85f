"""``edge-agent store status|rejected|resend`` beside a running agent: a batch the centre refused is
listed, shown, and once resent reaches the centre exactly once."""

from __future__ import annotations

import json
import signal
import subprocess

from sync.store import Store
from tests.conftest import agent_argv, agent_env
from tests.sync.conftest import SITE, make_readings, stored_readings, wait_for


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent_argv("store", *args), env=agent_env(), capture_output=True, text=True, timeout=60)


def test_set_aside_batch_is_listed_and_resent_through_the_running_agent(mosquitto, tmp_path, site_keys, sqlite_url,
                                                                       receivers):
    store_path = tmp_path / "agent-store.db"
    with Store(store_path, SITE) as s:
        seqs = s.append(make_readings(30))
        s.reject(seqs[:20], "old-1", "schema-version: the centre was not updated yet")
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
site: {{id: {SITE}, name: Test site, location: {{lat: 21.18, lon: 106.07}}}}
sync:
  broker: {mosquitto.url}
  allow_plaintext: true
  centre_public_keys: [{site_keys.centre_pub}]
  signing_key_file: {site_keys.key}
  keepalive_s: 5
  batch: {{max_age_s: 0.2}}
store: {{path: {store_path}}}
health: {{listen: null}}
""")
    out = _cli("rejected", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "old-1  20 readings (seq 1..20)" in out.stdout
    assert "schema-version" in out.stdout
    shown = _cli("rejected", "--config", str(cfg), "--batch", "old-1", "--limit", "3")
    assert shown.stdout.splitlines()[0].startswith("1  meter-1.p0 = 0.0 V")
    assert len(shown.stdout.splitlines()) == 3
    assert _cli("resend", "--config", str(cfg), "nope").returncode == 1

    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    agent = subprocess.Popen(agent_argv("run", "--config", str(cfg)), env=agent_env(), stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        centre = lambda: [r[1] for r in stored_readings(sqlite_url)]  # noqa: E731
        wait_for(lambda: set(seqs[20:]) <= set(centre()), 30, "the 10 waiting readings delivered")
        assert not set(seqs[:20]) & set(centre())
        status = json.loads(_cli("status", "--config", str(cfg), "--json").stdout)
        assert (status["rejected_readings"], status["rejected_batches"]) == (20, 1)
        out = _cli("resend", "--config", str(cfg), "--all")
        assert out.returncode == 0, out.stderr
        assert "20 readings of 1 batches are queued again" in out.stdout
        wait_for(lambda: set(seqs) <= set(centre()), 30, "the resent readings delivered")
        assert len(centre()) == len(set(centre()))  # each once (plus the agent's own start event)
        wait_for(lambda: json.loads(_cli("status", "--config", str(cfg), "--json").stdout)["waiting"] == 0, 20,
                 "the store drained")
        assert "no batch is set aside" in _cli("rejected", "--config", str(cfg)).stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        log.close()
