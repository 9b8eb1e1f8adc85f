"""Uploader behaviour: graceful flush, the byte bound, backoff, the last will, and the agent wiring."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from kernel.readings import Reading
from sync.mqtt import backoff_delay
from sync.uploader import Uploader
from tests.conftest import agent_argv, agent_env
from tests.sync.conftest import SITE, make_readings, query, stored_readings, sync_config, wait_for
from tests.sync.test_rejections import retained_status


def test_backoff_is_jittered_exponential_and_capped():
    for attempt in range(1, 40):
        d = [backoff_delay(attempt, 0.5, 60.0) for _ in range(50)]
        assert all(0.5 <= x <= min(60.0, 0.5 * 2**attempt) for x in d)
    assert len({round(backoff_delay(5, 0.5, 60.0), 6) for _ in range(20)}) > 10


def test_flush_delivers_a_partial_batch_and_says_offline(mosquitto, store, site_keys, sqlite_url, receivers,
                                                         uploaders):
    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    # max_age_s is long: only flush() makes the partial batch go now.
    up = Uploader(sync_config(mosquitto.url, site_keys.key, batch={"max_count": 1000, "max_age_s": 600}),
                  SITE, store)
    running = uploaders(up)
    wait_for(lambda: up.connected, 10, "the connection")
    store.append(make_readings(37))
    time.sleep(1.0)
    assert stored_readings(sqlite_url) == []
    assert running.call(up.flush(20.0)) is True
    assert len(stored_readings(sqlite_url)) == 37
    assert store.stats().depth == 0
    running.stop()
    status = retained_status(mosquitto.port, SITE)
    assert status is not None
    assert status.state == "offline"


def test_batches_respect_the_byte_bound(mosquitto, store, site_keys, sqlite_url, receivers, uploaders):
    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    import os

    noisy = [Reading("cam-1", "blob", os.urandom(60).hex(), 1e9 + i) for i in range(300)]
    seqs = store.append(noisy)
    cfg = sync_config(mosquitto.url, site_keys.key, batch={"max_count": 1000, "max_bytes": 4096, "max_age_s": 0.1})
    uploaders(Uploader(cfg, SITE, store))
    wait_for(lambda: store.stats().depth == 0, 60, "all readings acknowledged")
    assert [r[1] for r in stored_readings(sqlite_url)] == seqs
    batches = query(sqlite_url, "SELECT batch_id, COUNT(*) FROM readings GROUP BY batch_id")
    # 120 hex chars of noise compress to about 60 bytes: 4 KiB holds a few dozen readings, not 300.
    assert len(batches) >= 5
    assert max(n for _, n in batches) < 100


def test_agent_process_uploads_and_its_will_says_offline_when_killed(mosquitto, tmp_path, site_keys, sqlite_url,
                                                                    receivers):
    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
site: {{id: {SITE}, name: Test site, location: {{lat: 21.18, lon: 106.07}}}}
devices:
  - {{driver: system, name: board, period_s: 1}}
sync:
  broker: {mosquitto.url}
  allow_plaintext: true
  centre_public_keys: [{site_keys.centre_pub}]
  signing_key_file: {site_keys.key}
  keepalive_s: 5
  batch: {{max_age_s: 0.2}}
store: {{path: {tmp_path / 'agent-store.db'}}}
health: {{listen: null}}
""")
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(agent_argv("run", "--config", str(cfg)), env=agent_env(), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(stored_readings(sqlite_url)) >= 3, 30, "the agent's readings at the receiver")
        status = retained_status(mosquitto.port, SITE)
        assert status is not None
        assert status.state == "online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The broker publishes the will (retained "offline") once keepalive * 1.5 passes without a packet.
        wait_for(lambda: (s := retained_status(mosquitto.port, SITE)) is not None and s.state == "offline", 20,
                 "the last will", step=0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_commands_reach_the_handler_and_replies_go_up(mosquitto, store, site_keys, tmp_path, uploaders):
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from kernel.errors import SignatureError
    from sync.signing import Signer, generate_keypair, open_command, open_reply, sign_command
    from sync.wire import Command, CommandReply, Topics

    centre = Signer.from_file(generate_keypair(tmp_path / "centre", "centre")[0])
    up = Uploader(sync_config(mosquitto.url, site_keys.key), SITE, store)
    got: list[tuple[str, str]] = []

    def handle(kind: str, frame: bytes) -> None:
        cmd = open_command(frame, [centre.public_key()], SITE, kind=kind)
        got.append((kind, cmd.command_id))
        up.reply(CommandReply(site_id=SITE, command_id=cmd.command_id, outcome="accepted", ts=time.time()))

    up.on_commands(handle)
    uploaders(up)
    wait_for(lambda: up.connected, 10, "the connection")
    replies: list[bytes] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="centre", protocol=paho.MQTTv5)
    c.on_message = lambda _c, _u, m: replies.append(m.payload)
    c.connect("127.0.0.1", mosquitto.port)
    c.subscribe(Topics("kbe", SITE).cmd_reply, qos=1)
    c.loop_start()
    try:
        time.sleep(1.0)
        cmd = Command(command_id="c-1", target=SITE, kind="lighting", issued_at=time.time(),
                      expires_at=time.time() + 60, body={"override": "on"})
        c.publish(Topics("kbe", SITE).command("lighting"), sign_command(cmd, centre), qos=1)
        wait_for(lambda: replies != [], 10, "the command reply")
    finally:
        c.loop_stop()
        c.disconnect()
    assert got == [("lighting", "c-1")]
    # Signed by the site: the centre verifies it against the site's registered key, nothing else.
    reply = open_reply(replies[0], [Signer.from_file(site_keys.key).public_key()])
    assert reply.outcome == "accepted"
    with pytest.raises(SignatureError):
        open_reply(replies[0], [centre.public_key()])


def test_resends_back_off_while_the_centre_is_down(mosquitto, store, site_keys, uploaders):
    store.append(make_readings(10))
    up = Uploader(sync_config(mosquitto.url, site_keys.key, ack_timeout_s=1.0), SITE, store)
    uploaders(up)
    wait_for(lambda: len(up.in_flight) == 1, 10, "the batch in flight")
    time.sleep(8.0)
    resent = up.metrics.total("kbe_sync_batches_resent_total")
    # Sent at about 0, 1, 3 and 7 s: three resends; a fixed 1 s timer would have made seven.
    assert 1 <= resent <= 4
    assert store.stats().depth == 10


def test_a_backlog_goes_in_fewer_bigger_batches_alarms_first(mosquitto, store, site_keys, sqlite_url, receivers,
                                                              uploaders):
    """Overload: past max_in_flight full batches waiting, batches grow (to backlog_max_count) instead
    of multiplying; every reading arrives once, and the alarms that came last still go first."""
    from tests.sync.conftest import alarm

    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    seqs = store.append(make_readings(12_000))
    alarm_seqs = store.append([alarm(i) for i in range(3)])
    cfg = sync_config(mosquitto.url, site_keys.key, max_in_flight=2,
                      batch={"max_count": 500, "backlog_max_count": 3000, "max_age_s": 0.2})
    uploaders(Uploader(cfg, SITE, store))
    wait_for(lambda: store.stats().depth == 0, 90, "the backlog acknowledged")
    assert sorted(r[1] for r in stored_readings(sqlite_url)) == seqs + alarm_seqs
    batches = query(sqlite_url, "SELECT batch_id, COUNT(*), MIN(seq) FROM readings GROUP BY batch_id")
    sizes = [n for _, n, _ in batches]
    assert max(sizes) == 3000
    assert len(batches) < 12_003 / 500
    first = min((b for b, _, _ in batches), key=lambda b: int(b.rsplit("-", 1)[1]))
    marks = ",".join(str(q) for q in alarm_seqs)
    assert {b for (b,) in query(sqlite_url, f"SELECT batch_id FROM readings WHERE seq IN ({marks})")} == {first}
