"""Uploader behaviour: graceful flush, the byte bound, backoff, the last will, and the agent wiring."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from kernel.readings import Reading
from sync.mqtt import backoff_delay
from sync.uploader import Uploader
from tests.conftest import agent_argv, agent_env, until
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


# --- the ack path through the uploader's loop, one step at a time ----------------------------------
# Fast: a real store and real keys; the broker link is a recorder (_Link) so each step's publishes can
# be checked. The same loop over a real Mosquitto is tested above and in test_delivery.py.


class _Link:
    """Stands in for :class:`sync.mqtt.MqttLink`: records publishes; ``connected`` is set by the test."""

    def __init__(self) -> None:
        self.connected = True
        self.connect_failures = 3
        self.last_error = "timed out"
        self.published: list[tuple[str, bytes]] = []
        self.qos: list[int] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload))
        self.qos.append(qos)


def _stepper(tmp_path, store, **cfg):
    import asyncio
    from typing import cast

    from sync.mqtt import MqttLink
    from sync.signing import Signer, generate_keypair

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    # Not the centre key of the config: the keys given to the uploader are the ones it trusts.
    centre = Signer.from_file(generate_keypair(tmp_path / "given", "centre")[0])
    settings = {"max_in_flight": 1, "live_share": 0.0, "batch": {"max_count": 5, "backlog_max_count": 5, "max_age_s": 0.05}, **cfg}
    up = Uploader(sync_config("mqtt://127.0.0.1:1883", key, **settings), SITE, store,
                  centre_keys=[centre.public_key()])
    link = _Link()
    up._loop, up._wake, up._link = asyncio.get_running_loop(), asyncio.Event(), cast(MqttLink, link)
    return up, link, centre


def _batches(up, link):
    from sync import wire

    return [wire.decode_batch(wire.unpack_frame(p)) for t, p in link.published if t == up.topics.batch]


def _ack_for(centre, payload_frame: bytes) -> bytes:
    from sync import wire
    from sync.wire import Ack

    f = wire.unpack_frame(payload_frame)
    b = wire.decode_batch(f)
    ack = Ack(site_id=b.site_id, batch_id=b.batch_id, first_seq=b.first_seq, last_seq=b.last_seq,
              batch_sha256=wire.content_hash(f.payload), stored=len(b.readings), duplicates=0)
    return centre.small_frame(ack, b.batch_id)


async def test_an_ack_from_the_network_thread_deletes_its_batch_and_lets_the_next_go(tmp_path, store):
    import asyncio

    up, link, centre = _stepper(tmp_path, store)
    store.append(make_readings(8))
    await up._step()
    first = _batches(up, link)
    assert [b.seqs() for b in first] == [[1, 2, 3, 4, 5]], "max_in_flight 1: one batch until it is acked"
    assert any(t == up.topics.status for t, _ in link.published)
    await up._step()
    assert len(_batches(up, link)) == 1
    up._wake.clear()
    frame = next(p for t, p in link.published if t == up.topics.batch)
    up._on_message(up.topics.ack, _ack_for(centre, frame))
    await asyncio.sleep(0.01)
    assert up._wake.is_set(), "an ack wakes the loop"
    await up._step()
    assert [r.seq for r in store.pending(100)] == [6, 7, 8]
    assert len(_batches(up, link)) == 1, "the partial rest waits max_age_s"
    await asyncio.sleep(0.06)
    await up._step()
    assert [b.seqs() for b in _batches(up, link)] == [[1, 2, 3, 4, 5], [6, 7, 8]]
    assert up.acked_readings == 5
    health = up.health()
    assert (health["connected"], health["in_flight"], health["acked_readings"]) == (True, 1, 5)
    assert (health["connect_failures"], health["last_error"]) == (3, "timed out")


async def test_an_ack_received_just_before_a_disconnect_is_still_applied(tmp_path, store):
    up, link, centre = _stepper(tmp_path, store)
    store.append(make_readings(5))
    await up._step()
    frame = next(p for t, p in link.published if t == up.topics.batch)
    link.connected = False
    up._on_message(up.topics.ack, _ack_for(centre, frame))
    await up._step()
    assert store.stats().depth == 0
    assert up.in_flight == {}
    assert up.health()["connected"] is False


async def test_a_rejection_is_counted_and_the_status_goes_out_at_once(tmp_path, store):
    import asyncio

    from sync import wire
    from sync.wire import Rejection

    up, link, centre = _stepper(tmp_path, store)
    store.append(make_readings(5))
    await up._step()
    frame = wire.unpack_frame(next(p for t, p in link.published if t == up.topics.batch))
    batch = wire.decode_batch(frame)
    rej = Rejection(site_id=SITE, batch_id=batch.batch_id, batch_sha256=wire.content_hash(frame.payload),
                    reason="malformed", detail="seq 2")
    link.published.clear()
    up._on_message(up.topics.ack, centre.small_frame(rej, batch.batch_id))
    await up._step()
    await asyncio.sleep(0.01)
    assert up.rejected_batches == 1
    assert up.last_rejection == f"{batch.batch_id}: malformed: seq 2"
    assert up.health()["rejected_batches"] == 1
    assert up.health()["last_rejection"] == up.last_rejection
    assert up.status.due == 0.0 or any(t == up.topics.status for t, _ in link.published)
    await up._step()
    assert any(t == up.topics.status for t, _ in link.published), "the status reports the rejection"


async def test_a_reconnect_without_the_session_resends_what_was_in_flight(tmp_path, store):
    up, link, _centre = _stepper(tmp_path, store)
    store.append(make_readings(5))
    await up._step()
    sent = [p for t, p in link.published if t == up.topics.batch]
    link.published.clear()
    up._on_connect(session_present=True)
    await up._step()
    assert [p for t, p in link.published if t == up.topics.batch] == [], "the broker kept the session"
    assert up.metrics.get("kbe_sync_connected") == 1
    up._on_disconnect()
    assert up.metrics.get("kbe_sync_connected") == 0
    up._on_connect(session_present=False)
    await up._step()
    assert [p for t, p in link.published if t == up.topics.batch] == sent, "same bytes, same batch id"
    assert any(t == up.topics.status for t, _ in link.published)
    link.published.clear()
    await up._step()
    assert link.published == [], "a reconnect is handled once"


async def test_messages_on_command_topics_go_to_the_command_handler(tmp_path, store):
    import asyncio

    up, _link, _centre = _stepper(tmp_path, store)
    got: list[tuple[str, bytes]] = []
    up.on_commands(lambda kind, frame: got.append((kind, frame)))
    up._on_message(up.topics.command("lighting"), b"frame")
    await asyncio.sleep(0.01)
    assert got == [("lighting", b"frame")]
    assert not up.window.incoming


async def test_flush_reports_whether_everything_was_acknowledged(tmp_path, store):
    up, _link, _centre = _stepper(tmp_path, store)
    assert await up.flush(1.0) is True
    store.append(make_readings(2))
    started = time.monotonic()
    assert await up.flush(0.2) is False, "nothing acknowledges it here"
    assert time.monotonic() - started < 0.9, "it looks often, and gives up at its timeout"
    assert up.batches.flushing is False


def test_poll_interval_follows_max_age_within_bounds(tmp_path, store):
    from sync.signing import generate_keypair

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    for age, want in ((0.01, 0.02), (0.2, 0.1), (10.0, 0.25)):
        up = Uploader(sync_config("mqtt://127.0.0.1:1883", key, batch={"max_age_s": age}), SITE, store)
        assert up._poll_interval() == pytest.approx(want)
    assert up.health() == {"connected": False, "broker": "mqtt://127.0.0.1:1883", "in_flight": 0,
                           "acked_readings": 0, "rejected_batches": 0, "last_rejection": None,
                           "connect_failures": 0, "last_error": ""}


def test_the_link_is_made_from_the_config(tmp_path, store):
    from kernel.errors import SyncError
    from sync.signing import generate_keypair

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    up = Uploader(sync_config("mqtt://127.0.0.1:1883", key, username="site-a", password_file=str(pw),
                              max_in_flight=3, keepalive_s=7), SITE, store)
    link = up._make_link()
    o = link.opts
    assert (o.broker, o.client_id, o.username, o.password) == ("mqtt://127.0.0.1:1883", "kbe-site-a", "site-a",
                                                               "s3cret")
    assert (o.keepalive_s, o.max_inflight, o.will_topic) == (7, 7, up.topics.status)
    assert b'"offline"' in o.will_payload
    assert link._subscriptions == [(up.topics.ack, 1)]
    assert (up.topics.batch, up.topics.ack) == ("kbe/site-a/up/batch", "kbe/site-a/down/ack")
    up.on_commands(lambda kind, frame: None)
    assert up._make_link()._subscriptions == [(up.topics.ack, 1), ("kbe/site-a/down/cmd/+", 1)]
    pw.unlink()
    with pytest.raises(SyncError, match=f"cannot read password_file {pw}: No such file"):
        up._make_link()


def test_the_link_carries_the_tls_files_and_the_reconnect_bounds(tmp_path, store):
    from sync.signing import generate_keypair
    from tests.certs import make_tls

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    tls = make_tls(tmp_path / "pki")
    plain = Uploader(sync_config("mqtt://127.0.0.1:1883", key, username="site-a"), SITE, store)
    assert plain._make_link().opts.password is None, "no password file: no password"
    cfg = sync_config("mqtts://127.0.0.1:8883", key, reconnect_min_s=0.7, reconnect_max_s=9.0,
                      tls={"ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key),
                           "insecure_skip_verify": True})
    o = Uploader(cfg, SITE, store)._make_link().opts
    assert (o.ca_file, o.cert_file, o.key_file) == (tls.ca, tls.client_cert, tls.client_key)
    assert o.insecure_skip_verify is True
    assert (o.reconnect_min_s, o.reconnect_max_s) == (0.7, 9.0)
    o = Uploader(sync_config("mqtt://127.0.0.1:1883", key), SITE, store)._make_link().opts
    assert (o.ca_file, o.cert_file, o.key_file, o.insecure_skip_verify) == (None, None, None, False)


async def test_plaintext_is_warned_at_every_start(tmp_path, store, caplog):
    import asyncio
    import contextlib
    import uuid

    from sync.signing import generate_keypair

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    # Port 9 (discard) is closed here: the link keeps retrying and never reaches anyone's broker.
    up = Uploader(sync_config("mqtt://127.0.0.1:9", key, client_id=f"kbe-test-{uuid.uuid4().hex[:8]}"), SITE, store)
    with caplog.at_level("WARNING", logger="kbe.sync"):
        task = asyncio.create_task(up.run())
        await asyncio.sleep(0.3)
        assert not task.done(), "run() keeps going until it is cancelled"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert any(m.startswith("plaintext MQTT to mqtt://127.0.0.1:9 (sync.allow_plaintext)") for m in caplog.messages)


async def test_each_step_fills_the_window_at_qos_1_and_a_lost_link_sends_nothing(tmp_path, store):
    up, link, _centre = _stepper(tmp_path, store, max_in_flight=3)
    store.append(make_readings(20))
    await up._step()
    assert [b.seqs() for b in _batches(up, link)] == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]]
    assert set(link.qos) == {1}, "batches and the status go at QoS 1"
    assert len(up.in_flight) == 3
    link.connected = False
    up.in_flight.clear()
    assert await up._send_next() is False, "the link went down while the batch was prepared"
    assert len(_batches(up, link)) == 3
    assert up.in_flight == {}


async def test_flush_sends_a_partial_batch_at_once_and_returns_when_it_is_acked(tmp_path, store):
    import asyncio

    up, link, centre = _stepper(tmp_path, store, batch={"max_count": 5, "max_age_s": 3600})
    store.append(make_readings(2))
    await up._step()
    assert _batches(up, link) == [], "a partial batch waits max_age_s"
    flushing = asyncio.create_task(up.flush(5.0))
    await asyncio.sleep(0.01)
    assert up.batches.flushing is True
    await up._step()
    frame = next(p for t, p in link.published if t == up.topics.batch)
    up._on_message(up.topics.ack, _ack_for(centre, frame))
    await up._step()
    assert await flushing is True
    assert up.batches.flushing is False


async def test_the_loop_sleeps_at_most_its_poll_interval(tmp_path, store):
    import asyncio

    up, _link, _centre = _stepper(tmp_path, store)
    started = time.monotonic()
    await asyncio.wait_for(up._sleep(), 2.0)
    assert 0.01 <= time.monotonic() - started < 1.5
    up.notify()
    await asyncio.sleep(0)
    # Counted in turns of the loop, not in milliseconds (a loaded machine can pause the process
    # for longer than any small bound): a sleep of even one poll interval needs a timer.
    sleeping = asyncio.create_task(up._sleep())
    for _ in range(10):
        await asyncio.sleep(0)
    assert sleeping.done(), "a wake-up that came first is not slept through"


def test_the_uplink_metrics_are_described(tmp_path, store):
    from sync.signing import generate_keypair

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    up = Uploader(sync_config("mqtt://127.0.0.1:1883", key), SITE, store)
    for name in ("kbe_sync_connected", "kbe_sync_readings_acked_total", "kbe_sync_batches_resent_total",
                 "kbe_sync_batches_rejected_total", "kbe_sync_in_flight"):
        up.metrics.inc(name, 0) if name.endswith("_total") else up.metrics.set(name, 0)
        help_line = next(line for line in up.metrics.render().splitlines()
                         if line.startswith((f"# HELP {name.removesuffix('_total')}_total ", f"# HELP {name} ")))
        assert help_line.split(" ", 3)[3] != name.replace("_", " "), f"{name} has its own HELP text"


def test_notify_is_safe_before_run_and_after_its_loop_closed(tmp_path, store):
    import asyncio

    from sync.signing import generate_keypair

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    up = Uploader(sync_config("mqtt://127.0.0.1:1883", key), SITE, store)
    up.notify()  # the writer appends before the uplink has started: nothing to wake, no error
    loop = asyncio.new_event_loop()
    up._loop, up._wake = loop, asyncio.Event()
    loop.close()
    up.notify()  # the uplink has stopped: no error either


# --- the link's wiring, replies and run()'s start and stop, without a broker -----------------------
# Fast: a real store and real keys; the broker link is a recorder. The same paths over a real Mosquitto
# are test_commands_reach_the_handler_and_replies_go_up and test_flush_delivers_a_partial_batch_and_says_offline.


class _RunLink(_Link):
    """A recorder ``run()`` can start and stop; it records what is retained."""

    def __init__(self) -> None:
        super().__init__()
        self.started = False
        self.stopped = False
        self.retained: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        super().publish(topic, payload, qos, retain)
        if retain:
            self.retained.append((topic, payload))

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def test_a_reply_is_published_signed_by_the_site_and_refused_while_the_link_is_down(tmp_path, store):
    from typing import cast

    from sync.mqtt import MqttLink
    from sync.signing import generate_keypair, open_reply
    from sync.wire import CommandReply

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    up = Uploader(sync_config("mqtt://127.0.0.1:1883", key), SITE, store)
    assert up.site_id == SITE
    reply = CommandReply(site_id=SITE, command_id="c-1", outcome="accepted", ts=1_790_000_000.0)
    assert up.reply(reply) is False, "no link yet"
    link = _Link()
    up._link = cast(MqttLink, link)
    assert up.reply(reply) is True
    assert [(t, q) for (t, _p), q in zip(link.published, link.qos, strict=True)] == [(up.topics.cmd_reply, 1)]
    assert open_reply(link.published[0][1], [up.signer.public_key()]) == reply, "signed with the site key"
    link.connected = False
    assert up.reply(reply) is False
    assert len(link.published) == 1, "nothing published while the link is down"


def test_the_links_callbacks_reach_the_uploader(tmp_path, store):
    from sync.signing import generate_keypair

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    up = Uploader(sync_config("mqtt://127.0.0.1:1883", key), SITE, store)
    link = up._make_link()
    assert link._on_connect_cb is not None
    assert link._on_disconnect_cb is not None
    assert link._on_message_cb is not None
    link._on_connect_cb(False)
    assert (up._session_present, up._connected_changed) == (False, True)
    assert up.metrics.get("kbe_sync_connected") == 1
    link._on_disconnect_cb()
    assert up.metrics.get("kbe_sync_connected") == 0
    link._on_message_cb(up.topics.ack, b"not a frame")
    assert up.window.incoming, "an ack topic message goes to the in-flight window"


async def test_acks_are_checked_with_the_centre_keys_of_the_config(tmp_path, store):
    import asyncio
    from typing import cast

    from sync.mqtt import MqttLink
    from sync.signing import Signer, generate_keypair

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    cfg = sync_config("mqtt://127.0.0.1:1883", key, max_in_flight=1, live_share=0.0,
                      batch={"max_count": 5, "max_age_s": 3600})
    centre = Signer.from_file(tmp_path / "keys" / "centre.key")  # the pair sync_config names
    up = Uploader(cfg, SITE, store)  # no centre_keys given: read from centre_public_keys
    link = _Link()
    up._loop, up._wake, up._link = asyncio.get_running_loop(), asyncio.Event(), cast(MqttLink, link)
    store.append(make_readings(5))
    await up._step()
    frame = next(p for t, p in link.published if t == up.topics.batch)
    up._on_message(up.topics.ack, _ack_for(centre, frame))
    await up._step()
    assert store.stats().depth == 0, "the ack signed by the configured centre key was applied"
    assert up.acked_readings == 5


async def test_run_starts_the_link_takes_commands_on_its_loop_and_says_offline_at_stop(tmp_path, store):
    import asyncio
    import contextlib

    from sync.signing import generate_keypair, open_status

    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    up = Uploader(sync_config("mqtt://127.0.0.1:1883", key), SITE, store)
    link = _RunLink()
    up._make_link = lambda: link  # type: ignore[method-assign]
    got: list[tuple[str, bytes]] = []
    up.on_commands(lambda kind, frame: got.append((kind, frame)))
    task = asyncio.create_task(up.run())
    await until(lambda: link.started and up.connected, "the link started and connected")
    up._on_message(up.topics.command("lighting"), b"frame")  # as the network thread would
    await until(lambda: got, "the command handled")
    assert got == [("lighting", b"frame")], "the command reaches the handler on run()'s loop"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert link.stopped
    assert up._link is None
    assert not up.connected
    topic, payload = link.retained[-1]
    assert topic == up.topics.status
    assert open_status(payload, [up.signer.public_key()], SITE).state == "offline", "the signed offline status"
    assert up.metrics.get("kbe_sync_connected") == 0


async def test_a_rewind_never_takes_the_rows_of_batches_in_flight_again(tmp_path, store):
    up, link, _centre = _stepper(tmp_path, store, max_in_flight=2)
    store.append(make_readings(5))
    await up._step()
    store.append(make_readings(5, start=5))
    up.batches.rewind()  # as the status does after `edge-agent store resend`
    await up._step()
    assert [b.seqs() for b in _batches(up, link)] == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], (
        "the composer skips what the in-flight window holds"
    )
