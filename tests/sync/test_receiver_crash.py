"""The receiver dies between persisting a batch and acknowledging it: nothing is stored twice."""

from __future__ import annotations

from sync.receiver import EXIT_AFTER_COMMIT_ENV
from sync.uploader import Uploader
from tests.sync.conftest import SITE, make_readings, query, stored_readings, sync_config, wait_for


def test_killed_after_commit_before_ack_gives_no_duplicate(mosquitto, store, site_keys, db_url, receivers, uploaders):
    seqs = store.append(make_readings(300))
    rx1 = receivers(mosquitto, db_url, site_keys.registry, client_id="rx-crash",
                    env={EXIT_AFTER_COMMIT_ENV: "1"})
    rx1.wait_subscribed()
    up = Uploader(sync_config(mosquitto.url, site_keys.key, ack_timeout_s=2.0), SITE, store)
    uploaders(up)
    wait_for(lambda: rx1.proc.poll() is not None, 30, "the receiver to exit after its first commit")
    assert rx1.proc.returncode == 99
    # Persisted, but never acknowledged: the rows are still in the site's store.
    assert len(stored_readings(db_url)) == 300
    assert store.stats().depth == 300
    rx2 = receivers(mosquitto, db_url, site_keys.registry, client_id="rx-crash")
    rx2.wait_subscribed()
    wait_for(lambda: store.stats().depth == 0, 30, "the resent batch to be acknowledged")
    rows = stored_readings(db_url)
    assert [r[1] for r in rows] == seqs
    assert query(db_url, "SELECT COUNT(*), COUNT(DISTINCT seq) FROM readings")[0] == (300, 300)
    # The second receiver saw the batch again and recognised every reading as a duplicate.
    assert b"0 readings stored, 300 duplicates" in rx2.log.read_bytes()
