"""The receiver's checks, in process (no broker): every refusal is named, recorded and never stored."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import wire
from sync.receiver import Receiver
from sync.receiver_db import join_value, open_db, split_value
from sync.signing import Signer, SiteRegistry, generate_keypair, sign_status
from sync.wire import Ack, Batch, BufferStats, Rejection, WireReading
from tests.conftest import agent_argv, agent_env
from tests.sync.conftest import SITE, query


def batch(site: str = SITE, bid: str = "b-1", seqs: tuple[int, ...] = (1, 2, 3)) -> Batch:
    rs = [WireReading(seq=s, device="d", point="p", ts=float(s), value=s * 1.5) for s in seqs]
    return Batch(site_id=site, batch_id=bid, first_seq=min(seqs), last_seq=max(seqs), created_at=0.0,
                 readings=rs, buffer=BufferStats(depth=3, bytes=0))


@pytest.fixture
def rx(site_keys, db_url):
    db = open_db(db_url)
    r = Receiver(db, SiteRegistry.load(site_keys.registry), Signer.from_file(site_keys.centre_key), name="rx-test")
    yield r
    db.close()


def topic(site: str = SITE) -> str:
    return f"kbe/{site}/up/batch"


def test_good_batch_is_stored_and_a_resend_only_counts_duplicates(rx, site_keys, db_url):
    signer = Signer.from_file(site_keys.key)
    frame = signer.frame(wire.encode_batch_payload(batch()), "b-1")
    ack = rx.handle(topic(), frame)
    assert isinstance(ack, Ack)
    assert (ack.stored, ack.duplicates) == (3, 0)
    assert ack.batch_sha256 == wire.content_hash(wire.unpack_frame(frame).payload)
    again = rx.handle(topic(), signer.frame(wire.encode_batch_payload(batch(bid="b-2", seqs=(2, 3, 4))), "b-2"))
    assert isinstance(again, Ack)
    assert (again.stored, again.duplicates) == (1, 2)
    assert query(db_url, "SELECT seq, batch_id FROM readings ORDER BY seq") == [
        (1, "b-1"), (2, "b-1"), (3, "b-1"), (4, "b-2")
    ]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("garbage", "malformed"),
        ("unsigned", "unsigned"),
        ("tampered", "bad-signature"),
        ("other-key", "bad-signature"),
        ("unknown-site", "unknown-site"),
        ("site-mismatch", "site-mismatch"),
        ("schema-v1", "schema-version"),
        ("invalid-json", "malformed"),
        ("id-mismatch", "malformed"),
    ],
)
def test_refusals_are_recorded_and_not_stored(case, reason, rx, site_keys, db_url, tmp_path: Path):
    from sync.signing import generate_keypair

    signer = Signer.from_file(site_keys.key)
    payload = wire.encode_batch_payload(batch())
    t = topic()
    if case == "garbage":
        data = b"\x00\x01garbage"
    elif case == "unsigned":
        data = wire.pack_frame(payload, msg_id="b-1")
    elif case == "tampered":
        bad = bytearray(payload)
        bad[10] ^= 1
        data = wire.pack_frame(bytes(bad), signer.sign(payload), msg_id="b-1")
    elif case == "other-key":
        data = Signer.from_file(generate_keypair(tmp_path / "o")[0]).frame(payload, "b-1")
    elif case == "unknown-site":
        t = topic("site-zz")
        data = signer.frame(wire.encode_batch_payload(batch(site="site-zz")), "b-1")
    elif case == "site-mismatch":
        data = signer.frame(wire.encode_batch_payload(batch(site="site-b")), "b-1")
    elif case == "schema-v1":
        doc = json.loads(batch().model_dump_json())
        doc["schema_version"] = 1
        data = signer.frame(wire.compress(json.dumps(doc).encode()), "b-1")
    elif case == "invalid-json":
        data = signer.frame(wire.compress(b'{"type": "batch"'), "b-1")
    else:
        data = signer.frame(payload, "b-999")
    answer = rx.handle(t, data)
    attributable = case in ("site-mismatch", "schema-v1", "invalid-json", "id-mismatch")
    if attributable:
        # Signed by the site's own key: answered, naming the batch of the signed payload and its hash.
        assert isinstance(answer, Rejection)
        assert answer.reason == reason
        assert answer.batch_id == "b-1"
        assert answer.batch_sha256 == wire.content_hash(wire.unpack_frame(data).payload)
        assert query(db_url, "SELECT reason, batch_id FROM rejections") == [(reason, "b-1")]
    else:
        # Nobody's signature vouches for it: never answered in the site's name, recorded without a batch id.
        assert answer is None
        assert query(db_url, "SELECT reason, batch_id FROM rejections") == [(reason, None)]
    assert query(db_url, "SELECT COUNT(*) FROM readings") == [(0,)]
    assert rx.counters[f"rejected_{reason}"] == 1


@pytest.mark.parametrize("value", [None, True, False, 0, -7, 2**62 + 3, 1.25, float("inf"), "mưa to"])
def test_value_columns_round_trip(value):
    assert join_value(*split_value(value)) == value
    assert type(join_value(*split_value(value))) is type(value)


def test_receiver_cli_refuses_a_bad_db_url(site_keys):
    out = subprocess.run(agent_argv("receiver", "--broker", "mqtt://127.0.0.1:1", "--allow-plaintext",
                                    "--db", "mysql://x", "--sites", str(site_keys.registry),
                                    "--signing-key", str(site_keys.centre_key)),
                         env=agent_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--db: 'mysql://x' is neither" in out.stderr


def test_receiver_cli_refuses_a_bad_registry(tmp_path, site_keys):
    reg = tmp_path / "sites.yaml"
    reg.write_text("sites:\n  site-a:\n    public_keys: [nope.pub]\n")
    out = subprocess.run(agent_argv("receiver", "--broker", "mqtt://127.0.0.1:1", "--allow-plaintext",
                                    "--db", "sqlite:///x.db", "--sites", str(reg),
                                    "--signing-key", str(site_keys.centre_key)),
                         env=agent_env(), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2
    assert "sites.site-a.public_keys[0]" in out.stderr


def test_postgres_session_killed_between_batches_is_reopened(site_keys):
    import psycopg

    from tests.sync.conftest import PG_BASE, pg_schema_url

    with pg_schema_url() as url:
        db = open_db(url)
        try:
            rx = Receiver(db, SiteRegistry.load(site_keys.registry), Signer.from_file(site_keys.centre_key),
                          name="rx-pg")
            signer = Signer.from_file(site_keys.key)
            assert isinstance(rx.handle(topic(), signer.frame(wire.encode_batch_payload(batch()), "b-1")), Ack)
            pid = db._conn.info.backend_pid  # type: ignore[attr-defined]
            with psycopg.connect(PG_BASE, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            ack = rx.handle(topic(), signer.frame(wire.encode_batch_payload(batch(bid="b-2", seqs=(4, 5))), "b-2"))
            assert isinstance(ack, Ack)
            assert ack.stored == 2
            assert db.reconnects == 1  # type: ignore[attr-defined]
            assert query(url, "SELECT seq FROM readings ORDER BY seq") == [(1,), (2,), (3,), (4,), (5,)]
        finally:
            db.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "--broker: mqtt://127.0.0.1:1 is plaintext MQTT"),
        (["--allow-plaintext", "--loose-key"], "--signing-key: secret file"),
        (["--allow-plaintext", "--public-key"], "holds a public key; expected an unencrypted PEM private key"),
    ],
)
def test_receiver_cli_refuses_plaintext_and_loose_or_wrong_keys(site_keys, tmp_path, args, expected):
    key = site_keys.centre_key
    if "--loose-key" in args:
        key.chmod(0o644)
    if "--public-key" in args:
        key = site_keys.centre_pub
        key.chmod(0o600)
    extra = [a for a in args if a == "--allow-plaintext"]
    out = subprocess.run(agent_argv("receiver", "--broker", "mqtt://127.0.0.1:1", *extra, "--db",
                                    f"sqlite:///{tmp_path / 'x.db'}", "--sites", str(site_keys.registry),
                                    "--signing-key", str(key)),
                         env=agent_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_device_availability_events_and_site_status_are_kept(rx, site_keys, db_url, tmp_path):
    from kernel.readings import Priority
    from sync.wire import Status

    signer = Signer.from_file(site_keys.key)
    rs = [WireReading(seq=1, device="meter-1", point="v", ts=10.0, value=230.0),
          WireReading(seq=2, device="meter-1", point="availability", ts=11.0, value="offline",
                      priority=Priority.EVENT, meta={"where": "unit 1 on rs485-a"}),
          WireReading(seq=3, device="meter-1", point="availability", ts=42.0, value="online",
                      priority=Priority.EVENT)]
    b = Batch(site_id=SITE, batch_id="b-1", first_seq=1, last_seq=3, created_at=0.0, readings=rs,
              buffer=BufferStats(depth=3, bytes=0))
    frame = signer.frame(wire.encode_batch_payload(b), "b-1")
    assert isinstance(rx.handle(topic(), frame), Ack)
    assert isinstance(rx.handle(topic(), frame), Ack)  # a resend stores no event twice
    assert query(db_url, "SELECT device, state, ts FROM device_events ORDER BY seq") == [
        ("meter-1", "offline", 11.0), ("meter-1", "online", 42.0)]
    status = Status(site_id=SITE, state="online", ts=5.0, buffer=BufferStats(depth=7, bytes=1), in_flight=2)
    assert rx.handle_status(f"kbe/{SITE}/status", sign_status(status, signer)) == status
    later = status.model_copy(update={"state": "offline", "ts": 6.0})
    rx.handle_status(f"kbe/{SITE}/status", sign_status(later, signer))
    # A status for an unregistered site, claiming another site, unsigned, or signed by another key: not kept.
    assert rx.handle_status("kbe/site-zz/status", sign_status(later.model_copy(update={"site_id": "site-zz"}),
                                                               signer)) is None
    assert rx.handle_status(f"kbe/{SITE}/status", sign_status(later.model_copy(update={"site_id": "site-b"}),
                                                               signer)) is None
    newest = later.model_copy(update={"state": "online", "ts": 9.0})
    assert rx.handle_status(f"kbe/{SITE}/status", newest.model_dump_json().encode()) is None
    rogue = Signer.from_file(generate_keypair(tmp_path / "rogue", "rogue")[0])
    assert rx.handle_status(f"kbe/{SITE}/status", sign_status(newest, rogue)) is None
    assert rx.handle_status(f"kbe/{SITE}/status", wire.pack_frame(wire.encode_small(newest), codec=0)) is None
    assert query(db_url, "SELECT site_id, state, ts, buffer_depth, in_flight FROM site_status") == [
        (SITE, "offline", 6.0, 7, 2)]
    assert (rx.counters["status_unknown_site"], rx.counters["status_invalid"], rx.counters["status_unsigned"],
            rx.counters["status_bad_signature"]) == (1, 1, 2, 1)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=600),
                 st.binary(max_size=300).map(lambda b: wire.pack_frame(b or b"x", msg_id="b-1")),
                 st.binary(max_size=300).map(lambda b: wire.pack_frame(b or b"x", b"\x01" * 64, msg_id="b-1"))))
def test_any_bytes_on_the_batch_topic_are_a_counted_unanswered_refusal(rx_sqlite, data):
    rx, counted_before = rx_sqlite, sum(rx_sqlite.counters.values())
    assert rx.handle(topic(), data) is None  # nothing the site's key signed: never answered
    assert sum(rx.counters.values()) == counted_before + 1


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=600),
                 st.binary(max_size=300).map(lambda b: wire.pack_frame(b or b"x", b"\x01" * 64, codec=0))))
def test_any_bytes_on_the_ack_topic_are_refused_by_the_agent(site_keys, data):
    from kernel.errors import SignatureError
    from sync.signing import open_down

    with pytest.raises((SignatureError, wire.WireError)):
        open_down(data, [Signer.from_file(site_keys.centre_key).public_key()])


@pytest.fixture
def rx_sqlite(site_keys, tmp_path):
    db = open_db(f"sqlite:///{tmp_path / 'fuzz.db'}")
    yield Receiver(db, SiteRegistry.load(site_keys.registry), Signer.from_file(site_keys.centre_key), name="fz")
    db.close()
