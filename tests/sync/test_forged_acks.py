"""Forged, replayed and wrongly signed acks and rejections, with and without broker ACLs (issue 12).

The agent acts only on an ack or rejection signed by a registered centre key and naming a batch in
flight *with that batch's content hash*. Here a forger that can publish on the site's ``down/ack``
(an open broker, or the centre's leaked client certificate under the ACLs of docs/wire-protocol.md)
sends every kind of lie while the real receiver is away, and junk frames on ``up/batch`` that carry
the in-flight batch ids. Nothing may be deleted or set aside; once the real receiver runs, every
reading reaches the centre exactly once.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sync import wire
from sync.signing import Signer, generate_keypair
from sync.store import Store
from sync.uploader import Uploader
from sync.wire import Ack, Rejection, Topics
from tests.brokers import Mosquitto
from tests.certs import make_tls
from tests.sync.conftest import SITE, SiteKeys, make_readings, query, stored_readings, sync_config, wait_for
from tests.sync.test_acl import ACL, tls_client


def _plain_client(port: int, name: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


@contextlib.contextmanager
def _setting(kind: str, tmp_path, mosquitto_factory) -> Iterator[tuple[Mosquitto, dict, list[str], paho.Client]]:
    """(broker, the agent's sync overrides, the receiver's TLS args, the forger's client)."""
    if kind == "open":
        with Mosquitto(tmp_path / "broker") as broker:
            forger = _plain_client(broker.port, "forger")
            yield broker, {}, [], forger
            forger.loop_stop()
            forger.disconnect()
        return
    tls = make_tls(tmp_path / "pki", client_cn=SITE, extra_clients=(SITE, "centre"))
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    extra = ["use_identity_as_username true", f"acl_file {acl}"]
    with Mosquitto(tmp_path / "broker", tls=tls, require_certificate=True, extra_conf=extra) as broker:
        mtls = {"tls": {"ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key)}}
        rx_tls = ["--ca-file", str(tls.ca), "--cert-file", str(tmp_path / "pki" / "centre.pem"),
                  "--key-file", str(tmp_path / "pki" / "centre.key")]
        forger = tls_client(tls, "centre", broker.port)  # a leaked centre credential: ACLs let it through
        yield broker, mtls, rx_tls, forger
        forger.loop_stop()
        forger.disconnect()


@pytest.mark.parametrize("kind", ["open", "acl"])
def test_forged_replayed_and_wrongly_signed_acks_change_nothing(kind, tmp_path, store: Store, site_keys: SiteKeys,
                                                                sqlite_url, receivers, uploaders):
    centre = Signer.from_file(site_keys.centre_key)  # what the real receiver signs with
    rogue = Signer.from_file(generate_keypair(tmp_path / "rogue", "rogue")[0])
    with _setting(kind, tmp_path, None) as (broker, overrides, rx_tls, forger):
        seen: list[bytes] = []
        spy = forger
        spy.on_message = lambda _c, _u, m: seen.append(m.payload)
        spy.subscribe(Topics("kbe", SITE).batch, qos=1)
        time.sleep(0.5)
        seqs = store.append(make_readings(300))
        up = Uploader(sync_config(broker.url, site_keys.key, ack_timeout_s=60.0,
                                  batch={"max_count": 100, "max_age_s": 0.2}, **overrides), SITE, store)
        uploaders(up)
        wait_for(lambda: len(up.in_flight) == 3 and len(seen) >= 3, 30, "three batches in flight and seen")
        frames = [wire.unpack_frame(f) for f in seen[:3]]
        ack_topic = Topics("kbe", SITE).ack

        def publish(data: bytes, topic: str = ack_topic) -> None:
            forger.publish(topic, data, qos=1).wait_for_publish(5)

        for f in frames:
            doc = json.loads(f.json_bytes())
            bid, first, last = doc["batch_id"], doc["first_seq"], doc["last_seq"]
            right = wire.content_hash(f.payload)
            other = wire.content_hash(f.payload + b"x")
            ack = Ack(site_id=SITE, batch_id=bid, first_seq=first, last_seq=last, batch_sha256=right, stored=100,
                      duplicates=0)
            rej = Rejection(site_id=SITE, batch_id=bid, batch_sha256=right, reason="malformed", detail="forged")
            publish(ack.model_dump_json().encode())                      # unsigned, version-1 style JSON
            publish(wire.pack_frame(wire.encode_small(ack), codec=wire.CODEC_JSON, msg_id=bid))  # a frame, unsigned
            publish(rogue.small_frame(ack, bid))                         # signed by a key the site does not know
            publish(rogue.small_frame(rej, bid))
            # Signed by the centre but bound to other content: an ack or rejection replayed from another
            # batch that had the same id (another boot), or a receiver answering a junk frame.
            publish(centre.small_frame(ack.model_copy(update={"batch_sha256": other}), bid))
            publish(centre.small_frame(rej.model_copy(update={"batch_sha256": other}), bid))
            publish(centre.small_frame(ack.model_copy(update={"site_id": "site-b"}), bid))  # another site's
            tampered = bytearray(centre.small_frame(ack, bid))
            tampered[-5] ^= 1                                            # a genuine ack altered in transit
            publish(bytes(tampered))
            publish(b"\x00garbage")
        wait_for(lambda: up.metrics.total("kbe_sync_untrusted_down_total") >= 5 * 3, 15,
                 "the agent to count the untrusted messages")
        wait_for(lambda: up.metrics.total("kbe_sync_unmatched_acks_total") >= 3 * 3, 15,
                 "the agent to count the mismatched ones")
        time.sleep(0.5)
        assert store.stats().depth == 300, "a forged ack deleted rows"
        assert store.rejected_batches() == [], "a forged rejection set a batch aside"
        assert len(up.in_flight) == 3

        # Junk on up/batch carrying the in-flight ids: the real receiver must not answer in the site's name.
        rx = receivers(broker, sqlite_url, site_keys.registry, tls_args=rx_tls)
        rx.wait_subscribed()
        if kind == "open":  # under the ACLs only the site itself may publish there
            for f in frames:
                publish(wire.pack_frame(b"junk", msg_id=f.msg_id), Topics("kbe", SITE).batch)
                publish(rogue.frame(f.payload, f.msg_id), Topics("kbe", SITE).batch)
        # The real acks come with the resend (ack_timeout 60 s is too long: force it).
        for inf in up.in_flight.values():
            inf.sent_mono = -1e18
        up.notify()
        wait_for(lambda: store.stats().depth == 0, 60, "every reading acknowledged by the real receiver")
        assert store.rejected_batches() == []
        rows = stored_readings(sqlite_url)
        assert [r[1] for r in rows] == seqs  # every reading once, none twice (primary key (site, seq))
        assert query(sqlite_url, "SELECT COUNT(*) FROM rejections WHERE batch_id IS NOT NULL") == [(0,)]
        if kind == "open":
            assert query(sqlite_url, "SELECT COUNT(*) FROM rejections WHERE batch_id IS NULL") == [(6,)]
