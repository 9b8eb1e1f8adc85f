"""Two receivers in one $share group store every reading exactly once between them."""

from __future__ import annotations

from sync.uploader import Uploader
from tests.sync.conftest import SITE, make_readings, query, stored_readings, sync_config, wait_for


def test_two_receivers_share_the_load_exactly_once(mosquitto, store, site_keys, db_url, receivers, uploaders):
    seqs = store.append(make_readings(6000))
    rx = [receivers(mosquitto, db_url, site_keys.registry, client_id=f"rx-{i}", group="centre") for i in (1, 2)]
    for r in rx:
        r.wait_subscribed()
    cfg = sync_config(mosquitto.url, site_keys.key, max_in_flight=8, batch={"max_count": 250, "max_age_s": 0.2})
    uploaders(Uploader(cfg, SITE, store))
    wait_for(lambda: store.stats().depth == 0, 60, "every batch acknowledged")
    rows = stored_readings(db_url)
    assert [r[1] for r in rows] == seqs
    per_receiver = dict(query(db_url, "SELECT receiver, COUNT(*) FROM readings GROUP BY receiver"))
    assert set(per_receiver) == {"rx-1", "rx-2"}, per_receiver
    assert sum(per_receiver.values()) == 6000
