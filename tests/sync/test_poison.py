"""Poison batches: what the centre's database cannot hold is answered, so the site's uplink never blocks.

A site-signed batch the schema accepted but the database refused used to stay unanswered: the site
resent it forever and every later batch waited behind it. The schema now refuses such values
(``malformed``); a batch the database still refuses is answered ``unstorable``; a lost or broken
database still leaves a batch unanswered, so it is delivered again. Real Mosquitto, PostgreSQL and
SQLite; the "database still refuses" case is made with a real constraint on ``readings`` (a trigger
on SQLite), since the schema leaves no value the stock tables refuse.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import zlib
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from kernel.metrics import Metrics
from kernel.readings import Reading
from sync import wire
from sync.receiver import Receiver, _once
from sync.receiver_db import open_db
from sync.signing import Signer, SiteRegistry
from sync.store import Store
from sync.uploader import Uploader
from sync.wire import Ack, Batch, BufferStats, Rejection, WireReading
from tests.sync.conftest import SITE, make_readings, query, stored_readings, sync_config, wait_for

_POISONS = {
    # what a faulty or hostile site could sign, each a value no column of the centre holds
    "nul-device": lambda r: r.update(device="meter\u0000"),
    "nul-meta": lambda r: r.update(meta={"k": "v\u0000"}),
    "seq-past-bigint": lambda r: r.update(seq=2**63),
    "int-past-double": lambda r: r.update(value=10**400),
}


class PoisoningSigner(Signer):
    """Signs, with the site's own key, its first batch (and any resend of it) with one reading made
    unstorable; every other batch honestly."""

    poison = "nul-device"
    target = ""

    def frame(self, payload: bytes, msg_id: str = "") -> bytes:
        self.target = self.target or msg_id
        if msg_id != self.target:
            return super().frame(payload, msg_id)
        doc = json.loads(zlib.decompress(payload))
        _POISONS[self.poison](doc["readings"][-1])
        if doc["readings"][-1]["seq"] != doc["last_seq"]:
            doc["last_seq"] = doc["readings"][-1]["seq"]
        return super().frame(wire.compress(json.dumps(doc).encode()), msg_id)


def _run_site(tmp_path, name, mosquitto, site_keys, signer):
    store = Store(tmp_path / f"{name}.db", SITE, metrics=Metrics())
    up = Uploader(sync_config(mosquitto.url, site_keys.key, ack_timeout_s=1.0), SITE, store, signer=signer)
    return store, up


def _later_lot_flows(store: Store, db_url: str, first_lot: list[int]) -> None:
    later = store.append(make_readings(20, start=100))
    wait_for(lambda: [r[1] for r in stored_readings(db_url)] == later, 30, "the later batch to be stored")
    wait_for(lambda: store.stats().depth == 0, 30, "the later batch to be acknowledged")
    assert not set(first_lot) & {r[1] for r in stored_readings(db_url)}


@pytest.mark.parametrize("poison", ["nul-device", "nul-meta", "seq-past-bigint", "int-past-double"])
def test_a_batch_the_schema_refuses_is_answered_and_set_aside(
    poison, mosquitto, tmp_path, site_keys, db_url, receivers, uploaders
):
    rx = receivers(mosquitto, db_url, site_keys.registry)
    rx.wait_subscribed()
    signer = PoisoningSigner.from_file(site_keys.key)
    signer.poison = poison
    store, up = _run_site(tmp_path, poison, mosquitto, site_keys, signer)
    first = store.append(make_readings(30))
    uploaders(up)
    wait_for(lambda: store.rejected_batches() != [], 30, "the agent to set the poisoned batch aside")
    [kept] = store.rejected_batches()
    assert kept.reason.startswith("malformed")
    assert (kept.count, kept.first_seq, kept.last_seq) == (30, first[0], first[-1])
    _later_lot_flows(store, db_url, first)
    assert query(db_url, "SELECT batch_id, reason FROM rejections") == [(kept.batch_id, "malformed")]
    assert up.rejected_batches == 1
    store.close()


def _refuse_point(db_url: str, point: str) -> None:
    """A real rule of the centre's database that refuses some rows the wire schema accepts."""
    if db_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(db_url[len("sqlite:///") :], timeout=30)) as db:
            db.execute(
                f"CREATE TRIGGER refuse_point BEFORE INSERT ON readings WHEN NEW.point = '{point}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a centre rule'); END"
            )
        return
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE readings ADD CONSTRAINT refuse_point CHECK (point <> '{point}')")


def test_a_batch_the_database_refuses_is_answered_unstorable(
    mosquitto, tmp_path, site_keys, db_url, receivers, uploaders
):
    rx = receivers(mosquitto, db_url, site_keys.registry)
    rx.wait_subscribed()
    _refuse_point(db_url, "refused")
    store, up = _run_site(tmp_path, "unstorable", mosquitto, site_keys, Signer.from_file(site_keys.key))
    first = store.append([*make_readings(10), Reading("meter-1", "refused", 1.0, 1_790_000_001.0)])
    uploaders(up)
    wait_for(lambda: store.rejected_batches() != [], 30, "the agent to set the unstorable batch aside")
    [kept] = store.rejected_batches()
    assert kept.reason.startswith("unstorable")
    assert (kept.count, kept.first_seq, kept.last_seq) == (11, first[0], first[-1])
    _later_lot_flows(store, db_url, first)
    [(bid, reason, detail)] = query(db_url, "SELECT batch_id, reason, detail FROM rejections")
    assert (bid, reason) == (kept.batch_id, "unstorable")
    assert "refuse" in detail
    store.close()


# --- in process: the group split, the counters, and a broken database left unanswered ------------


def _batch(bid: str, seqs: range, point: str = "p") -> Batch:
    rs = [WireReading(seq=s, device="d", point=point, ts=float(s), value=s * 1.5) for s in seqs]
    return Batch(site_id=SITE, batch_id=bid, first_seq=seqs[0], last_seq=seqs[-1], created_at=0.0,
                 readings=rs, buffer=BufferStats(depth=len(rs), bytes=0))  # fmt: skip


@pytest.fixture
def rx(site_keys, db_url):
    db = open_db(db_url)
    r = Receiver(db, SiteRegistry.load(site_keys.registry), Signer.from_file(site_keys.centre_key), name="rx-p")
    yield r
    db.close()


def _verified(rx: Receiver, site_keys: Any, batch: Batch) -> Any:
    frame = Signer.from_file(site_keys.key).frame(wire.encode_batch_payload(batch), batch.batch_id)
    return rx._verify(f"kbe/{SITE}/up/batch", frame)


def test_one_unstorable_batch_does_not_sink_its_group(rx, site_keys, db_url):
    _refuse_point(db_url, "refused")
    group = [
        _verified(rx, site_keys, _batch("b-1", range(1, 4))),
        _verified(rx, site_keys, _batch("b-2", range(4, 7), point="refused")),
        _verified(rx, site_keys, _batch("b-3", range(7, 10))),
    ]
    answers = rx._store(group)
    assert [type(a) for a in answers] == [Ack, Rejection, Ack]
    assert isinstance(answers[1], Rejection)
    assert answers[1].reason == "unstorable"
    assert (answers[1].first_seq, answers[1].last_seq) == (4, 6)
    assert [r[1] for r in stored_readings(db_url)] == [1, 2, 3, 7, 8, 9]
    assert rx.counters["rejected_unstorable"] == 1
    assert rx.health.rejections.labels(SITE, "unstorable")._value.get() == 1


def test_a_broken_database_leaves_the_batch_unanswered_and_a_resend_is_stored(rx, site_keys, db_url):
    frame = Signer.from_file(site_keys.key).frame(wire.encode_batch_payload(_batch("b-1", range(1, 4))), "b-1")
    _rename_readings(db_url, "readings", "readings_away")  # not a value the database refuses: its schema is gone
    with pytest.raises(Exception) as err:  # whatever the backend raises, it is not an answer
        rx.handle(f"kbe/{SITE}/up/batch", frame)
    assert "UnstorableError" not in type(err.value).__name__
    assert rx.counters["rejected_unstorable"] == 0
    assert query(db_url, "SELECT reason FROM rejections") == []
    _rename_readings(db_url, "readings_away", "readings")
    ack = rx.handle(f"kbe/{SITE}/up/batch", frame)
    assert isinstance(ack, Ack)
    assert ack.stored == 3


def _rename_readings(db_url: str, old: str, new: str) -> None:
    sql = f"ALTER TABLE {old} RENAME TO {new}"
    if db_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(db_url[len("sqlite:///") :], timeout=30)) as db:
            db.execute(sql)
        return
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql)


def test_each_batch_of_a_split_group_is_pubacked_once(rx, site_keys, db_url):
    _refuse_point(db_url, "refused")
    pubacks: Counter[str] = Counter()
    group = [
        replace(_verified(rx, site_keys, _batch(bid, seqs, point)), done=_once(lambda b=bid: pubacks.update([b])))
        for bid, seqs, point in [("b-1", range(1, 4), "p"), ("b-2", range(4, 7), "refused"), ("b-3", range(7, 9), "p")]
    ]
    rx._write_group(group)  # the writer thread's entry
    assert pubacks == {"b-1": 1, "b-2": 1, "b-3": 1}
    group[0].done()
    assert pubacks["b-1"] == 1
    assert rx.counters["errors"] == 0
    assert [r[1] for r in stored_readings(db_url)] == [1, 2, 3, 7, 8]
