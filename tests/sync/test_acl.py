"""The broker ACL of docs/wire-protocol.md, with sites identified by their client certificate:
a site can publish only under its own id, and only the centre can acknowledge."""

from __future__ import annotations

import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from sync.signing import generate_keypair
from sync.store import Store
from sync.uploader import Uploader
from sync.wire import Ack
from tests.brokers import Mosquitto
from tests.certs import make_tls
from tests.sync.conftest import SITE, make_readings, query, stored_readings, sync_config, wait_for

ACL = """\
# Sites: client certificate CN = site id (use_identity_as_username true).
pattern write kbe/%u/up/#
pattern write kbe/%u/status
pattern read kbe/%u/down/#
# The centre's receivers and control.
user centre
topic read kbe/+/up/#
topic read kbe/+/status
topic write kbe/+/down/#
"""


def tls_client(tls, cn: str, port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{cn}-rogue", protocol=paho.MQTTv5)
    c.tls_set(ca_certs=str(tls.ca), certfile=str(tls.ca.parent / f"{cn}.pem"), keyfile=str(tls.ca.parent / f"{cn}.key"))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_a_site_cannot_speak_for_another_site_nor_forge_acks(tmp_path, store, site_keys, sqlite_url, receivers,
                                                            uploaders):
    tls = make_tls(tmp_path / "pki", client_cn=SITE, extra_clients=(SITE, "site-b", "centre"))
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    # site-b is registered too: only the broker ACL stops site-a from publishing as site-b.
    b_key, b_pub = generate_keypair(tmp_path / "bkeys", "site-b")
    site_keys.registry.write_text(site_keys.registry.read_text() + f"  site-b:\n    public_keys: [{b_pub}]\n")
    extra = ["use_identity_as_username true", f"acl_file {acl}"]
    with Mosquitto(tmp_path / "broker", tls=tls, require_certificate=True, extra_conf=extra) as broker:
        rx = receivers(broker, sqlite_url, site_keys.registry, client_id="centre-rx",
                       tls_args=["--ca-file", str(tls.ca), "--cert-file", str(tmp_path / "pki" / "centre.pem"),
                                 "--key-file", str(tmp_path / "pki" / "centre.key")])
        rx.wait_subscribed()
        mtls = {"ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key)}
        seqs = store.append(make_readings(50))
        uploaders(Uploader(sync_config(broker.url, site_keys.key, tls=mtls), SITE, store))
        wait_for(lambda: store.stats().depth == 0, 30, "site-a's own readings delivered under the ACL")
        assert [r[1] for r in stored_readings(sqlite_url)] == seqs

        # site-a's certificate, site-b's topic and a batch correctly signed with site-b's key:
        # the broker drops it before any receiver sees it.
        other = Store(tmp_path / "b.db", "site-b")
        other.append(make_readings(5))
        rogue_up = Uploader(sync_config(broker.url, b_key, tls=mtls, client_id="site-a-as-b"), "site-b", other)
        running = uploaders(rogue_up)
        wait_for(lambda: len(rogue_up.in_flight) == 1, 10, "the rogue batch published")
        time.sleep(2.0)
        assert query(sqlite_url, "SELECT COUNT(*) FROM readings WHERE site_id = 'site-b'") == [(0,)]
        assert query(sqlite_url, "SELECT COUNT(*) FROM rejections") == [(0,)]
        running.stop()
        other.close()

        # A forged ack from a site's certificate never reaches the other site.
        victim_seen: list[bytes] = []
        victim = tls_client(tls, "site-b", broker.port)
        victim.on_message = lambda _c, _u, m: victim_seen.append(m.payload)
        victim.subscribe("kbe/site-b/down/ack", qos=1)
        forger = tls_client(tls, SITE, broker.port)
        time.sleep(1.0)
        ack = Ack(site_id="site-b", batch_id="x-1", first_seq=1, last_seq=5, batch_sha256="0" * 64, stored=5,
                  duplicates=0)
        forger.publish("kbe/site-b/down/ack", ack.model_dump_json(), qos=1).wait_for_publish(5)
        time.sleep(1.5)
        assert victim_seen == []
        # Control: the same ack from the centre's certificate does arrive.
        centre = tls_client(tls, "centre", broker.port)
        centre.publish("kbe/site-b/down/ack", ack.model_dump_json(), qos=1).wait_for_publish(5)
        wait_for(lambda: len(victim_seen) == 1, 10, "the centre's ack")
        for c in (victim, forger, centre):
            c.loop_stop()
            c.disconnect()
