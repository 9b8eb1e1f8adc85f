"""Mutual TLS with certificates made in the test: no client certificate, no connection."""

from __future__ import annotations

import time

from sync.mqtt import LinkOptions, MqttLink
from sync.uploader import Uploader
from tests.brokers import Mosquitto
from tests.certs import make_tls
from tests.sync.conftest import SITE, make_readings, stored_readings, sync_config, wait_for


def test_mutual_tls_refuses_a_client_without_certificate(tmp_path, store, site_keys, sqlite_url, receivers,
                                                         uploaders):
    tls = make_tls(tmp_path / "pki")
    with Mosquitto(tmp_path / "broker", tls=tls, require_certificate=True) as broker:
        seqs = store.append(make_readings(100))
        no_cert = Uploader(sync_config(broker.url, site_keys.key, tls={"ca_file": str(tls.ca)}), SITE, store)
        running = uploaders(no_cert)
        time.sleep(3.0)
        assert not no_cert.connected
        assert no_cert.health()["connect_failures"] >= 1
        assert "certificate" in broker.log.read_text()  # the broker says why: no client certificate
        running.stop()
        assert store.stats().depth == 100

        # A bare client without a certificate is refused too.
        bare = MqttLink(LinkOptions(broker=broker.url, client_id="bare", ca_file=tls.ca, reconnect_min_s=0.2,
                                    reconnect_max_s=0.5))
        bare.start()
        assert not bare.wait_connected(2.0)
        bare.stop()

        rx = receivers(broker, sqlite_url, site_keys.registry,
                       tls_args=["--ca-file", str(tls.ca), "--cert-file", str(tls.client_cert),
                                 "--key-file", str(tls.client_key)])
        rx.wait_subscribed()
        with_cert = Uploader(
            sync_config(broker.url, site_keys.key,
                        tls={"ca_file": str(tls.ca), "cert_file": str(tls.client_cert),
                             "key_file": str(tls.client_key)}),
            SITE, store,
        )
        uploaders(with_cert)
        wait_for(lambda: store.stats().depth == 0, 30, "delivery over mutual TLS")
        assert [r[1] for r in stored_readings(sqlite_url)] == seqs


def test_insecure_skip_verify_is_warned_at_every_connect(tmp_path, store, site_keys, uploaders, caplog):
    tls = make_tls(tmp_path / "pki")
    with Mosquitto(tmp_path / "broker", tls=tls) as broker:
        up = Uploader(sync_config(broker.url, site_keys.key, keepalive_s=5,
                                  tls={"ca_file": str(tls.ca), "insecure_skip_verify": True}), SITE, store)
        with caplog.at_level("INFO", logger="kbe.sync"):
            uploaders(up)
            wait_for(lambda: up.connected, 15, "a connection without verification")
            broker.stop()
            wait_for(lambda: not up.connected, 15, "the link down")
            broker.start()
            wait_for(lambda: up.connected, 30, "the second connection")
            time.sleep(0.2)
        warnings = [m for m in caplog.messages if "does not check that its certificate names" in m]
        # One warning per connection: a loaded machine may add a reconnect, never drop the warning.
        connects = [m for m in caplog.messages if m.startswith("connected to ") and "(session" in m]
        assert len(connects) >= 2
        assert len(warnings) == len(connects)
