"""A centre that says when it is blind (issue 12): the receiver's /health goes red, with a metric
naming why, when the broker is unreachable, when a site's frames are being refused, and when no site
has reported for a while; and back to green when that ends."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from sync.receiver_health import ReceiverHealth
from sync.signing import Signer, generate_keypair
from sync.store import Store
from sync.uploader import Uploader
from sync.wire import Batch, BufferStats, WireReading
from tests.brokers import Mosquitto
from tests.conftest import free_port
from tests.sync.conftest import SITE, make_readings, query, sync_config, wait_for


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _batch(site: str = SITE) -> Batch:
    return Batch(site_id=site, batch_id="b-1", first_seq=1, last_seq=1, created_at=0.0,
                 readings=[WireReading(seq=1, device="d", point="p", ts=990.0, value=1.0)],
                 buffer=BufferStats(depth=1, bytes=0))


def _gauge(h: ReceiverHealth, reason: str) -> float | None:
    return h.registry.get_sample_value("kbe_receiver_unhealthy", {"reason": reason})


def test_each_blind_case_turns_red_with_its_reason_and_back_to_green():
    clock = FakeClock()
    h = ReceiverHealth(silence_s=60, reject_window_s=30, clock=clock, wall=lambda: 1000.0)
    assert h.report()["reasons"] == ["broker-unreachable"]  # not connected yet
    h.broker_up(True)
    h.stored(SITE, _batch(), 1, 0)
    assert h.report() == {**h.report(), "ok": True, "reasons": []}

    h.broker_up(False)
    assert h.report()["reasons"] == ["broker-unreachable"]
    assert _gauge(h, "broker-unreachable") == 1
    h.broker_up(True)
    assert h.report()["ok"] is True
    assert _gauge(h, "broker-unreachable") == 0

    clock.t += 1
    h.rejected(SITE, "bad-signature")  # e.g. the wrong public key registered for the site
    report = h.report()
    assert report["reasons"] == ["site-rejected"]
    assert report["rejecting_sites"] == {SITE: "bad-signature"}
    assert _gauge(h, "site-rejected") == 1
    clock.t += 1
    h.stored(SITE, _batch(), 1, 0)  # the site's batches are taken again
    assert h.report()["ok"] is True
    h.rejected("site-b", "unknown-site")
    clock.t += 31  # a refusal long ago no longer counts
    assert h.report()["ok"] is True

    clock.t += 60  # nobody reported for silence_s
    assert h.report()["reasons"] == ["no-site-reported"]
    assert _gauge(h, "no-site-reported") == 1
    h.reported("site-b")  # a status counts as reporting
    assert h.report()["ok"] is True
    assert h.registry.get_sample_value("kbe_receiver_rejected_total",
                                       {"site": SITE, "reason": "bad-signature"}) == 1
    assert h.registry.get_sample_value("kbe_receiver_readings_stored_total", {"site": SITE}) == 2
    assert h.registry.get_sample_value("kbe_receiver_lag_seconds", {"site": SITE}) == 10.0


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _health(port: int) -> dict:
    code, body = _get(port, "/health")
    return {"code": code, **(json.loads(body) if body else {})}


def test_receiver_process_health_goes_red_and_green(tmp_path, site_keys, sqlite_url, receivers, uploaders):
    port = free_port()
    with Mosquitto(tmp_path / "broker") as broker:
        rx = receivers(broker, sqlite_url, site_keys.registry, extra_args=[
            "--health-listen", f"127.0.0.1:{port}", "--silence", "4", "--reject-window", "600",
            "--stats-every", "1"])
        rx.wait_subscribed()
        wait_for(lambda: _health(port).get("broker_connected") is True, 15, "the receiver connected")

        good_store = Store(tmp_path / "good.db", SITE)
        good = Uploader(sync_config(broker.url, site_keys.key, keepalive_s=5), SITE, good_store)
        running = uploaders(good)
        good_store.append(make_readings(20))
        wait_for(lambda: good_store.stats().depth == 0, 30, "the good site delivered")
        assert _health(port)["code"] == 200
        # The site's status is kept by the centre.
        wait_for(lambda: query(sqlite_url, "SELECT state FROM site_status") == [("online",)], 10,
                 "the site's status stored")

        # The wrong key registered (or a rogue): every frame refused, and the centre says so.
        rogue_key = generate_keypair(tmp_path / "rogue", "rogue")[0]
        rogue_store = Store(tmp_path / "rogue.db", SITE)
        rogue_store.append(make_readings(5))
        rogue = uploaders(Uploader(sync_config(broker.url, rogue_key, client_id="rogue"), SITE, rogue_store,
                                   signer=Signer.from_file(rogue_key)))
        wait_for(lambda: _health(port).get("reasons") == ["site-rejected"], 15, "/health red: site-rejected")
        assert _health(port)["code"] == 503
        code, metrics = _get(port, "/metrics")
        assert code == 200
        assert f'kbe_receiver_rejected_total{{reason="bad-signature",site="{SITE}"}}'.encode() in metrics
        assert b'kbe_receiver_unhealthy{reason="site-rejected"} 1.0' in metrics
        assert f'kbe_receiver_readings_stored_total{{site="{SITE}"}} 20.0'.encode() in metrics
        assert b"process_resident_memory_bytes" in metrics
        rogue.stop()
        good_store.append(make_readings(5, start=20))
        wait_for(lambda: _health(port)["code"] == 200, 15, "/health green once the site's batches are stored")

        running.stop()  # no site reports any more
        wait_for(lambda: _health(port).get("reasons") == ["no-site-reported"], 15, "/health red: silence")
        # ... and its log says so at the next counters line (every --stats-every seconds).
        wait_for(lambda: b"is blind: no-site-reported (see /health)" in rx.log.read_bytes(), 10,
                 "the log says the receiver is blind")

        broker.stop()
        wait_for(lambda: "broker-unreachable" in _health(port).get("reasons", []), 15, "/health red: broker")
        broker.start()
        wait_for(lambda: "broker-unreachable" not in _health(port).get("reasons", []), 30,
                 "the broker reason cleared")
        good_store.close()
        rogue_store.close()
