"""The receiver dies between persisting a batch and acknowledging it: nothing is stored twice.

The window is opened from outside the receiver: it talks to the broker through a relay whose
receiver-to-broker direction is cut once it has subscribed, so its ack never leaves; once the batch
is in the database the test kills it with SIGKILL.
"""

from __future__ import annotations

import signal

from sync.uploader import Uploader
from tests.sync.conftest import SITE, make_readings, query, stored_readings, sync_config, wait_for
from tests.sync.gate import Gate


def test_killed_after_commit_before_ack_gives_no_duplicate(mosquitto, store, site_keys, db_url, receivers, uploaders):
    seqs = store.append(make_readings(300))
    gate = Gate(mosquitto.port)
    try:
        rx1 = receivers(mosquitto, db_url, site_keys.registry, client_id="rx-crash",
                        broker_url=f"mqtt://127.0.0.1:{gate.port}")
        rx1.wait_subscribed()
        gate.cut_upstream()
        up = Uploader(sync_config(mosquitto.url, site_keys.key, ack_timeout_s=2.0), SITE, store)
        uploaders(up)
        wait_for(lambda: len(stored_readings(db_url)) == 300, 30, "the receiver to commit the batch")
        rx1.proc.send_signal(signal.SIGKILL)
        assert rx1.proc.wait(10) == -signal.SIGKILL
    finally:
        gate.close()
    # Persisted, but never acknowledged: the rows are still in the site's store.
    assert store.stats().depth == 300
    rx2 = receivers(mosquitto, db_url, site_keys.registry, client_id="rx-crash")
    rx2.wait_subscribed()
    wait_for(lambda: store.stats().depth == 0, 30, "the resent batch to be acknowledged")
    rows = stored_readings(db_url)
    assert [r[1] for r in rows] == seqs
    assert query(db_url, "SELECT COUNT(*), COUNT(DISTINCT seq) FROM readings")[0] == (300, 300)
    # The second receiver saw the batch again and recognised every reading as a duplicate.
    assert b"0 readings stored, 300 duplicates" in rx2.log.read_bytes()
