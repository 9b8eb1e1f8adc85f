"""End to end: store -> uploader -> real Mosquitto -> receiver process -> SQLite / PostgreSQL."""

from __future__ import annotations

from kernel.readings import Priority
from sync.uploader import Uploader
from tests.sync.conftest import SITE, alarm, make_readings, query, stored_readings, sync_config, wait_for


def test_every_reading_arrives_once_with_its_value(mosquitto, store, site_keys, db_url, receivers, uploaders):
    rx = receivers(mosquitto, db_url, site_keys.registry)
    rx.wait_subscribed()
    readings = make_readings(1200)
    readings[5] = readings[5].__class__("meter-1", "flag", True, readings[5].ts)
    readings[6] = readings[6].__class__("meter-1", "label", "xin chào", readings[6].ts, meta={"k": "v"})
    readings[7] = readings[7].__class__("meter-1", "count", 2**60 + 1, readings[7].ts)
    seqs = store.append(readings)
    store.append([alarm(1)])
    up = Uploader(sync_config(mosquitto.url, site_keys.key), SITE, store)
    uploaders(up)
    wait_for(lambda: len(stored_readings(db_url)) == 1201, 60, "1201 readings at the receiver")
    wait_for(lambda: store.stats().depth == 0, 30, "the store to be emptied by acks")
    rows = stored_readings(db_url)
    assert [r[1] for r in rows[:1200]] == seqs
    by_seq = {r[1]: r for r in rows}
    assert by_seq[seqs[5]][5] is True
    assert by_seq[seqs[6]][5] == "xin chào"
    assert by_seq[seqs[7]][5] == 2**60 + 1
    assert by_seq[seqs[100]][5] == 100.0
    assert query(db_url, "SELECT COUNT(*) FROM readings WHERE priority = 0")[0][0] == 1
    assert up.acked_readings == 1201
    assert query(db_url, "SELECT COUNT(*) FROM rejections")[0][0] == 0


def test_alarms_go_ahead_of_a_telemetry_backlog(mosquitto, store, site_keys, sqlite_url, receivers, uploaders):
    store.append(make_readings(3000))
    store.append([alarm(i) for i in range(3)])
    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    cfg = sync_config(mosquitto.url, site_keys.key, max_in_flight=1, batch={"max_count": 200, "max_age_s": 0.2})
    uploaders(Uploader(cfg, SITE, store))
    wait_for(lambda: len(stored_readings(sqlite_url)) >= 1, 30, "a first batch")
    first_batch = query(sqlite_url, "SELECT batch_id FROM readings ORDER BY received_at LIMIT 1")[0][0]
    prios = [p for (p,) in query(sqlite_url, f"SELECT priority FROM readings WHERE batch_id = '{first_batch}'")]
    assert prios.count(int(Priority.ALARM)) == 3
    wait_for(lambda: len(stored_readings(sqlite_url)) == 3003, 60, "all readings")


def test_live_readings_are_not_starved_by_a_drain(mosquitto, store, site_keys, sqlite_url, receivers, uploaders):
    backlog = store.append(make_readings(4000))
    # Batches stay at max_count (no growth under the backlog): this is about the live share alone.
    cfg = sync_config(mosquitto.url, site_keys.key, max_in_flight=1, live_share=0.25, ack_timeout_s=2.0,
                      batch={"max_count": 400, "backlog_max_count": 400, "max_age_s": 0.2})
    up = Uploader(cfg, SITE, store)
    uploaders(up)
    # No receiver yet: the first batch of the drain waits for its ack while new readings come in.
    wait_for(lambda: len(up.in_flight) == 1, 10, "the first batch in flight")
    live = store.append(make_readings(50, start=10_000))
    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    wait_for(lambda: len(stored_readings(sqlite_url)) == 4050, 60, "all readings")
    order = [s for (s,) in query(sqlite_url, "SELECT seq FROM readings ORDER BY received_at, seq")]
    backlog_before_live = max(order.index(s) for s in live) - len(live) + 1
    # The live readings rode in the second batch of the drain, not after the 4000-reading backlog.
    assert backlog_before_live <= 2 * 400
    assert order.index(backlog[0]) < order.index(live[0])
    batches = dict(query(sqlite_url, "SELECT seq, batch_id FROM readings"))
    assert len({batches[s] for s in live}) == 1
