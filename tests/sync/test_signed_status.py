"""Trust both ways for the retained status, through the real entry points and a private Mosquitto:
the agent's status and its last will are frames signed by the site; the receiver keeps only those
that verify against the site's registered key and counts the rest; every centre command refuses a
plaintext broker unless told, and warns when told."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kernel.errors import SignatureError
from sync import wire
from sync.signing import Signer, generate_keypair, load_public_key, open_status, sign_status
from sync.wire import Status, Topics
from tests.brokers import Mosquitto
from tests.conftest import agent_argv, agent_env, free_port
from tests.sync.conftest import SITE, SiteKeys, query, stored_readings, wait_for
from tests.traffic.corridor_sites import write_corridor
from tests.traffic.test_centre_coordinate import _store_counts


def _retained(port: int, site: str = SITE) -> bytes | None:
    """The raw retained payload on the site's status topic, or None."""
    got: list[bytes] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"status-raw-{time.monotonic_ns()}", protocol=paho.MQTTv5)
    c.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    c.connect("127.0.0.1", port)
    c.subscribe(Topics("kbe", site).status, qos=1)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        c.loop(0.1)
    c.disconnect()
    return got[-1] if got else None


def _site_status(url: str) -> list[tuple[str, float]]:
    return [(s, float(t)) for s, t in query(url, f"SELECT state, ts FROM site_status WHERE site_id = '{SITE}'")]


def test_the_agents_status_is_signed_trusted_by_the_receiver_and_its_will_verifies_after_sigkill(
    mosquitto: Mosquitto, tmp_path: Path, site_keys: SiteKeys, sqlite_url: str, receivers
) -> None:
    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    site_pub = [load_public_key(site_keys.pub)]
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
    started = time.time()
    proc = subprocess.Popen(agent_argv("run", "--config", str(cfg)), env=agent_env(), stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: len(stored_readings(sqlite_url)) >= 3, 30, "the agent's readings at the receiver")
        # The receiver verified the online status against the registry's key and kept it.
        wait_for(lambda: [s for s, _ in _site_status(sqlite_url)] == ["online"], 15, "a trusted online status")
        raw = _retained(mosquitto.port)
        assert raw is not None
        assert raw[:2] == wire.FRAME_MAGIC, "the retained status is a frame"
        online = open_status(raw, site_pub, SITE)
        assert online.state == "online"
        assert online.schema_version == 3
        killed = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

        # The broker publishes the will once keepalive * 1.5 passes without a packet; it verifies.
        def will() -> Status | None:
            payload = _retained(mosquitto.port)
            status = open_status(payload, site_pub, SITE) if payload else None
            return status if status is not None and status.state == "offline" else None

        wait_for(lambda: will() is not None, 20, "the signed last will", step=0.5)
        w = will()
        assert w is not None
        assert w.ts is not None
        assert online.ts is not None
        # Made and signed at the connection: after the agent started, before its online statuses.
        assert started - 1.0 <= w.ts <= online.ts <= killed
        assert w.connected_at == w.ts == online.connected_at, "the will of the connection the statuses went on"
        # The receiver takes it over that connection's newer-stamped online statuses: the site is offline.
        wait_for(lambda: _site_status(sqlite_url) == [("offline", w.ts)], 15, "the will at the receiver")
        rogue = Signer.from_file(generate_keypair(tmp_path / "rogue", "rogue")[0])
        payload = _retained(mosquitto.port)
        assert payload is not None
        with pytest.raises(SignatureError, match="does not verify"):
            open_status(payload, [rogue.public_key()], SITE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_an_unsigned_or_forged_status_is_counted_logged_once_and_never_trusted(
    mosquitto: Mosquitto, tmp_path: Path, site_keys: SiteKeys, sqlite_url: str, receivers
) -> None:
    health = free_port()
    rx = receivers(mosquitto, sqlite_url, site_keys.registry, extra_args=["--health-listen", f"127.0.0.1:{health}"])
    rx.wait_subscribed()
    site = Signer.from_file(site_keys.key)
    rogue = Signer.from_file(generate_keypair(tmp_path / "rogue", "rogue")[0])
    now = time.time()
    genuine = Status(site_id=SITE, state="online", ts=now, healthy=True)
    # Newer than the genuine one: kept, either would hide it from the centre.
    forged = Status(site_id=SITE, state="offline", ts=now + 100, healthy=False)
    topic = Topics("kbe", SITE).status
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="forger", protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        for payload in (forged.model_dump_json().encode(), sign_status(forged, rogue),
                        forged.model_dump_json().encode(), sign_status(forged, rogue)):  # fmt: skip
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        pub.publish(topic, sign_status(genuine, site), qos=1).wait_for_publish(5)
        wait_for(lambda: _site_status(sqlite_url) == [("online", now)], 15, "the genuine status only")
    finally:
        pub.loop_stop()
        pub.disconnect()
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5).read().decode()
    assert f'kbe_receiver_status_untrusted_total{{reason="unsigned",site="{SITE}"}} 2.0' in metrics
    assert f'kbe_receiver_status_untrusted_total{{reason="bad-signature",site="{SITE}"}} 2.0' in metrics
    assert f'kbe_receiver_status_messages_total{{site="{SITE}"}} 1.0' in metrics
    rx.stop()
    lines = [ln for ln in rx.log.read_text().splitlines() if "ignored a status" in ln]
    assert len(lines) == 1, lines
    assert f"not from site {SITE}: unsigned" in lines[0]


def _centre_argv(command: str, tmp_path: Path, keys: SiteKeys, broker: str, allow: bool = False) -> list[str]:
    """A centre command that takes --broker, with every other option it needs."""
    key, sites = str(keys.centre_key), str(keys.registry)
    broker_args = [broker, "--allow-plaintext"] if allow else [broker]
    if command == "send":
        return ["centre", "send", "--broker", *broker_args, "--key", key, "--sites", sites, "--site", SITE,
                "command", "lighting", "--body", '{"action": "auto"}']  # fmt: skip
    if command == "follow":
        return ["centre", "follow", "--broker", *broker_args, "--key", key, "--sites", sites, "--for", "1"]
    if command == "coordinate":
        corridor, db = write_corridor(tmp_path / "corridor", [5020, 5021, 5022]), f"sqlite:///{tmp_path / 'c.db'}"
        _store_counts(db, time.time())  # loop counts for a plan to compute
        return ["centre", "coordinate", "--corridor", str(corridor), "--db", db,
                "--broker", *broker_args, "--dry-run"]  # fmt: skip
    return ["centre", "enrol", "--dir", str(tmp_path / "centre"), "--broker", *broker_args, "--sites", sites]


CENTRE_COMMANDS = ["send", "follow", "coordinate", "enrol"]


@pytest.mark.parametrize("command", CENTRE_COMMANDS)
def test_each_centre_command_refuses_a_plaintext_broker_before_connecting(command, tmp_path, site_keys) -> None:
    argv = _centre_argv(command, tmp_path, site_keys, "mqtt://127.0.0.1:1")
    out = subprocess.run(agent_argv(*argv), env=agent_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"centre {command}: --broker: mqtt://127.0.0.1:1 is plaintext MQTT; use mqtts:// or pass --allow-plaintext "
        "(a lab only)"
    ]
    assert out.stdout == ""


@pytest.mark.parametrize("command", CENTRE_COMMANDS)
def test_each_centre_command_warns_when_plaintext_is_allowed(
    command, mosquitto: Mosquitto, tmp_path: Path, site_keys: SiteKeys
) -> None:
    argv = _centre_argv(command, tmp_path, site_keys, mosquitto.url, allow=True)
    warning = f"plaintext MQTT to {mosquitto.url} (--allow-plaintext)"
    if command != "enrol":
        out = subprocess.run(agent_argv(*argv), env=agent_env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert warning in out.stderr
        return
    subprocess.run(agent_argv("centre", "ca", "init", "--dir", str(tmp_path / "centre")), env=agent_env(),
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    log = tmp_path / "enrol.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(agent_argv(*argv), env=agent_env(), stdout=f, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: b"enrolment service on" in log.read_bytes(), 30, "the enrolment service")
            assert warning in log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def test_the_will_is_made_afresh_before_each_connection_attempt() -> None:
    from sync.mqtt import LinkOptions, MqttLink

    made: list[float] = []

    def will() -> bytes:
        made.append(time.monotonic())
        return f"will-{len(made)}".encode()

    # Nothing listens on that port: every attempt fails, and each one is preceded by a new will.
    opts = LinkOptions(broker=f"mqtt://127.0.0.1:{free_port()}", client_id="will-test", will_topic="kbe/x/status",
                       will_factory=will, reconnect_min_s=0.05, reconnect_max_s=0.1)  # fmt: skip
    link = MqttLink(opts)
    link.start()
    try:
        wait_for(lambda: link.connect_failures >= 3, 10, "three failed attempts")
    finally:
        link.stop()
    assert len(made) >= 3
    assert len(made) >= link.connect_failures
