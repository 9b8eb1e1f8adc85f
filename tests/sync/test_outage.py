"""A broker outage of more than 30 s while the agent keeps acquiring: every reading arrives once, in order."""

from __future__ import annotations

import threading
import time

from sync.uploader import Uploader
from tests.sync.conftest import SITE, make_readings, stored_readings, sync_config, wait_for

OUTAGE_S = 31.0


def test_broker_outage_loses_nothing_and_duplicates_nothing(
    mosquitto, store, site_keys, sqlite_url, receivers, uploaders
):
    rx = receivers(mosquitto, sqlite_url, site_keys.registry)
    rx.wait_subscribed()
    up = Uploader(sync_config(mosquitto.url, site_keys.key, ack_timeout_s=3.0), SITE, store)
    uploaders(up)

    appended: list[int] = []
    slowest = [0.0]
    stop = threading.Event()

    def acquire() -> None:
        i = 0
        while not stop.is_set():
            t = time.monotonic()
            appended.extend(store.append(make_readings(8, start=i)))
            slowest[0] = max(slowest[0], time.monotonic() - t)
            i += 8
            stop.wait(0.05)

    acq = threading.Thread(target=acquire, daemon=True)
    acq.start()
    try:
        wait_for(lambda: len(stored_readings(sqlite_url)) > 100, 30, "readings before the outage")
        mosquitto.stop()
        down_at = time.monotonic()
        wait_for(lambda: not up.connected, 10, "the uploader to notice the outage")
        depth_at_stop = store.stats().depth
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        # Acquisition went on without the network.
        assert store.stats().depth > depth_at_stop + 1000
        mosquitto.start()
        time.sleep(3.0)
    finally:
        stop.set()
        acq.join(10)
    assert slowest[0] < 2.0, f"an append waited {slowest[0]:.2f} s"
    n = len(appended)
    wait_for(lambda: len(stored_readings(sqlite_url)) >= n and store.stats().depth == 0, 50,
             f"all {n} readings at the receiver and acked")
    rows = stored_readings(sqlite_url)
    seqs = [r[1] for r in rows]
    assert seqs == sorted(appended)  # every reading exactly once (the primary key forbids twice)
    assert len(set(seqs)) == len(seqs) == n
    by_point: dict[str, list[tuple[int, float]]] = {}
    for _site, seq, _dev, point, ts, _v in rows:
        by_point.setdefault(point, []).append((seq, ts))
    for point, items in by_point.items():
        ts_in_seq_order = [ts for _, ts in sorted(items)]
        assert ts_in_seq_order == sorted(ts_in_seq_order), f"{point} out of order"


def test_broker_restart_that_loses_every_session(tmp_path, store, site_keys, sqlite_url, receivers, uploaders):
    from tests.brokers import Mosquitto

    with Mosquitto(tmp_path / "amnesiac", persistence=False) as broker:
        rx = receivers(broker, sqlite_url, site_keys.registry, client_id="rx-a")
        rx.wait_subscribed()
        up = Uploader(sync_config(broker.url, site_keys.key, ack_timeout_s=12.0), SITE, store)
        uploaders(up)
        first = store.append(make_readings(500))
        wait_for(lambda: store.stats().depth == 0, 30, "the first readings acknowledged")
        rx.stop()
        during = store.append(make_readings(700, start=500))
        wait_for(lambda: len(up.in_flight) >= 1, 10, "a batch in flight with nobody to ack it")
        assert up.metrics.total("kbe_sync_batches_resent_total") == 0
        broker.stop()
        wait_for(lambda: not up.connected, 10, "the uploader to notice")
        broker.start()
        wait_for(lambda: up.connected, 10, "the reconnection")
        # The broker forgot every session and message: the agent resends at once instead of
        # waiting out its 12 s ack timeout.
        wait_for(lambda: up.metrics.total("kbe_sync_batches_resent_total") >= 1, 5, "an immediate resend")
        rx2 = receivers(broker, sqlite_url, site_keys.registry, client_id="rx-b")
        rx2.wait_subscribed()
        wait_for(lambda: store.stats().depth == 0, 40, "the in-flight readings acknowledged")
        assert [r[1] for r in stored_readings(sqlite_url)] == first + during
