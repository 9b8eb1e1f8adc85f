"""Tampered, unsigned and unknown-site batches: refused, never stored, counted, kept aside by the agent."""

from __future__ import annotations

import json
import time
import zlib

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kernel.metrics import Metrics
from sync import wire
from sync.signing import Signer, generate_keypair
from sync.store import Store
from sync.uploader import Uploader
from sync.wire import Status, Topics
from tests.sync.conftest import SITE, make_readings, query, stored_readings, sync_config, wait_for


class TamperingSigner(Signer):
    """Signs the payload, then changes one byte of it on the way (as a man in the middle would)."""

    def frame(self, payload: bytes, msg_id: str = "") -> bytes:
        sig = self.sign(payload)
        bad = bytearray(payload)
        bad[len(bad) // 2] ^= 0x20
        return wire.pack_frame(bytes(bad), sig, msg_id=msg_id)


class UnsignedSigner(Signer):
    """Sends frames without a signature."""

    def frame(self, payload: bytes, msg_id: str = "") -> bytes:
        return wire.pack_frame(payload, msg_id=msg_id)


def retained_status(broker_port: int, site: str) -> Status | None:
    got: list[bytes] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="status-reader", protocol=paho.MQTTv5)
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    c.connect("127.0.0.1", broker_port)
    c.subscribe(Topics("kbe", site).status, qos=1)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        c.loop(0.1)
    c.disconnect()
    return wire.decode_status(wire.unpack_frame(got[-1])) if got else None


class OtherSiteSigner(Signer):
    """Signs, with the site's own key, a batch that claims another site id (a misconfigured agent)."""

    def frame(self, payload: bytes, msg_id: str = "") -> bytes:
        doc = json.loads(zlib.decompress(payload))
        doc["site_id"] = "site-b"
        return super().frame(wire.compress(json.dumps(doc).encode()), msg_id)


@pytest.mark.parametrize("kind", ["tampered", "unsigned", "unknown-site"])
def test_unattributable_batch_is_recorded_not_answered_and_kept_by_the_agent(
    kind, mosquitto, tmp_path, site_keys, db_url, receivers, uploaders
):
    site = "site-x" if kind == "unknown-site" else SITE
    store = Store(tmp_path / f"{kind}.db", site, metrics=Metrics())
    key = generate_keypair(tmp_path / "xkeys", "x")[0] if kind == "unknown-site" else site_keys.key
    signer = {"tampered": TamperingSigner, "unsigned": UnsignedSigner, "unknown-site": Signer}[kind].from_file(key)
    rx = receivers(mosquitto, db_url, site_keys.registry)
    rx.wait_subscribed()
    store.append(make_readings(40))
    up = Uploader(sync_config(mosquitto.url, key, ack_timeout_s=1.0), site, store, signer=signer)
    uploaders(up)
    expected = {"tampered": "bad-signature", "unsigned": "unsigned", "unknown-site": "unknown-site"}[kind]
    wait_for(lambda: len(query(db_url, "SELECT reason FROM rejections")) >= 2, 30,
             "the receiver to record the first send and a resend")
    # Recorded without a batch id (nothing signed says which batch it is), never stored, never answered:
    # the agent keeps its rows and keeps resending (backing off) until the centre can take them.
    assert set(query(db_url, "SELECT site_id, batch_id, reason FROM rejections")) == {(site, None, expected)}
    assert stored_readings(db_url) == []
    assert store.stats().depth == 40
    assert store.rejected_batches() == []
    assert up.rejected_batches == 0
    assert up.metrics.total("kbe_sync_batches_resent_total") >= 1
    store.close()


def test_signed_rejection_sets_the_batch_aside_and_the_status_says_so(
    mosquitto, tmp_path, site_keys, db_url, receivers, uploaders
):
    store = Store(tmp_path / "mismatch.db", SITE, metrics=Metrics())
    rx = receivers(mosquitto, db_url, site_keys.registry)
    rx.wait_subscribed()
    seqs = store.append(make_readings(40))
    up = Uploader(sync_config(mosquitto.url, site_keys.key, ack_timeout_s=1.0), SITE, store,
                  signer=OtherSiteSigner.from_file(site_keys.key))
    uploaders(up)
    wait_for(lambda: store.rejected_batches() != [], 30, "the agent to keep the batch aside")
    [kept] = store.rejected_batches()
    assert kept.reason.startswith("site-mismatch")
    assert (kept.count, kept.first_seq, kept.last_seq) == (40, seqs[0], seqs[-1])
    assert [r.seq for r in store.rejected_readings(kept.batch_id)] == seqs
    assert store.stats().depth == 0
    assert store.stats().rejected == 40
    # Well past the ack timeout: the batch was not resent, nothing was stored.
    time.sleep(3.0)
    assert query(db_url, "SELECT site_id, batch_id, reason FROM rejections") == [(SITE, kept.batch_id, "site-mismatch")]
    assert stored_readings(db_url) == []
    assert up.rejected_batches == 1
    wait_for(lambda: (s := retained_status(mosquitto.port, SITE)) is not None and s.rejected_batches == 1, 10,
             "the retained status to report the rejection")
    status = retained_status(mosquitto.port, SITE)
    assert status is not None
    assert status.state == "online"
    assert status.last_rejection is not None
    assert "site-mismatch" in status.last_rejection
    store.close()
