"""The uplink's in-flight window (:mod:`sync.inflight`): acks, rejections, untrusted answers, resends.

Fast unit tests with a real SQLite store, real Ed25519 keys and real metrics; the broker link is a
recorder (:class:`_Link`) because these tests check *which* frames the window publishes *when*, on a
clock they choose. The same paths over a real Mosquitto are in test_delivery.py and test_outage.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from kernel.metrics import Metrics
from sync import wire
from sync.inflight import InFlightWindow
from sync.mqtt import MqttLink
from sync.signing import Signer, generate_keypair
from sync.store import Store
from sync.wire import Ack, Rejection, Topics
from tests.sync.conftest import SITE, make_readings, sync_config

ACK_TIMEOUT = 10.0


@dataclass
class _Link:
    """Records what would be published (stands in for :class:`sync.mqtt.MqttLink`)."""

    published: list[tuple[str, bytes, int]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, payload, qos))


@dataclass
class Rig:
    """A window over a real store, with the centre's signer and what its callbacks saw."""

    window: InFlightWindow
    store: Store
    metrics: Metrics
    centre: Signer
    topics: Topics
    notified: list[int]
    rejected: list[int]

    def send(self, batch_id: str, n: int) -> tuple[list[int], bytes, str]:
        """Store ``n`` readings and record them as one batch in flight; its seqs, frame and digest."""
        seqs = self.store.append(make_readings(n))
        payload = wire.compress(f'{{"batch_id": "{batch_id}"}}'.encode())
        frame = wire.pack_frame(payload, b"\x00" * 64, msg_id=batch_id)
        digest = wire.content_hash(payload)
        self.window.add(batch_id, seqs, frame, digest)
        return seqs, frame, digest

    def ack(
        self, batch_id: str, digest: str, seqs: list[int], site: str = SITE, signer: Signer | None = None
    ) -> bytes:
        msg = Ack(
            site_id=site,
            batch_id=batch_id,
            first_seq=min(seqs),
            last_seq=max(seqs),
            batch_sha256=digest,
            stored=len(seqs),
            duplicates=0,
        )
        return (signer or self.centre).small_frame(msg, batch_id)

    def reject(self, batch_id: str, digest: str, detail: str = "") -> bytes:
        msg = Rejection(
            site_id=SITE, batch_id=batch_id, batch_sha256=digest, reason="malformed", detail=detail
        )
        return self.centre.small_frame(msg, batch_id)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.get(name, labels or None)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    key, _pub = generate_keypair(tmp_path / "site-keys", SITE)
    centre_key, _ = generate_keypair(tmp_path / "keys", "centre")
    centre = Signer.from_file(centre_key)
    cfg = sync_config("mqtt://127.0.0.1:1883", key, ack_timeout_s=ACK_TIMEOUT)
    metrics = Metrics()
    store = Store(tmp_path / "store.db", SITE, metrics=Metrics())
    topics = Topics("kbe", SITE)
    notified: list[int] = []
    rejected: list[int] = []
    window = InFlightWindow(
        cfg,
        SITE,
        store,
        metrics,
        [centre.public_key()],
        topics,
        lambda: notified.append(1),
        lambda: rejected.append(1),
    )
    yield Rig(window, store, metrics, centre, topics, notified, rejected)
    store.close()


def test_a_sent_batch_is_in_flight_and_counted(rig: Rig) -> None:
    seqs, frame, digest = rig.send("b-1", 5)
    inf = rig.window.batches["b-1"]
    assert (inf.batch_id, inf.seqs, inf.frame, inf.digest, inf.sends) == ("b-1", seqs, frame, digest, 1)
    assert inf.sent_mono == inf.first_sent_mono
    assert abs(inf.sent_mono - time.monotonic()) < 5
    assert rig.window.sent == set(seqs)
    rig.send("b-2", 3)
    assert rig.metric("kbe_sync_batches_sent_total") == 2
    assert rig.metric("kbe_sync_readings_sent_total") == 8
    assert rig.metric("kbe_sync_in_flight") == 2


async def test_an_ack_deletes_its_rows_and_frees_room(rig: Rig) -> None:
    seqs, _frame, digest = rig.send("b-1", 5)
    kept, _, _ = rig.send("b-2", 3)
    rig.window.receive(rig.ack("b-1", digest, seqs))
    await rig.window.handle_incoming()
    assert list(rig.window.batches) == ["b-2"]
    assert rig.window.sent == set(kept)
    assert [r.seq for r in rig.store.pending(100)] == kept
    assert rig.window.acked_readings == 5
    assert rig.metric("kbe_sync_readings_acked_total") == 5
    assert rig.metric("kbe_sync_batches_acked_total") == 1
    assert rig.metric("kbe_sync_in_flight") == 1
    assert 0 < rig.metric("kbe_sync_ack_latency_seconds") < 60
    assert rig.notified == [1]
    assert rig.rejected == []
    assert not rig.window.incoming
    _s, _f, d2 = rig.send("b-3", 2)
    rig.window.receive(rig.ack("b-3", d2, _s))
    await rig.window.handle_incoming()
    assert rig.window.acked_readings == 7, "counted since the uploader was made"


async def test_acks_that_arrive_together_are_deleted_together_and_wake_once(rig: Rig) -> None:
    s1, _, d1 = rig.send("b-1", 2)
    s2, _, d2 = rig.send("b-2", 3)
    rig.window.receive(rig.ack("b-1", d1, s1))
    rig.window.receive(rig.ack("b-2", d2, s2))
    await rig.window.handle_incoming()
    assert rig.window.batches == {}
    assert rig.window.sent == set()
    assert rig.store.stats().depth == 0
    assert rig.window.acked_readings == 5
    assert rig.metric("kbe_sync_batches_acked_total") == 2
    assert rig.metric("kbe_sync_in_flight") == 0
    assert rig.notified == [1]


async def test_nothing_to_handle_changes_nothing(rig: Rig) -> None:
    rig.send("b-1", 2)
    await rig.window.handle_incoming()
    assert rig.notified == []
    assert rig.metric("kbe_sync_batches_acked_total") == 0
    assert list(rig.window.batches) == ["b-1"]


@pytest.mark.parametrize("case", ["other-site", "unknown-batch", "other-content"])
async def test_a_signed_answer_for_no_batch_in_flight_deletes_nothing(rig: Rig, case: str) -> None:
    seqs, _frame, digest = rig.send("b-1", 4)
    bad = {
        "other-site": rig.ack("b-1", digest, seqs, site="site-b"),
        "unknown-batch": rig.ack("b-9", digest, seqs),
        "other-content": rig.ack("b-1", "0" * 64, seqs),
    }[case]
    good_s, _, good_d = rig.send("b-2", 1)
    # The unmatched answer first: the good one behind it is still handled.
    rig.window.receive(bad)
    rig.window.receive(rig.ack("b-2", good_d, good_s))
    await rig.window.handle_incoming()
    assert list(rig.window.batches) == ["b-1"]
    assert [r.seq for r in rig.store.pending(100)] == seqs
    assert rig.metric("kbe_sync_unmatched_acks_total") == 1
    assert rig.metric("kbe_sync_readings_acked_total") == 1
    assert rig.window.acked_readings == 1


async def test_an_ack_of_a_batch_already_acked_is_unmatched(rig: Rig) -> None:
    seqs, _frame, digest = rig.send("b-1", 2)
    rig.window.receive(rig.ack("b-1", digest, seqs))
    rig.window.receive(rig.ack("b-1", digest, seqs))
    await rig.window.handle_incoming()
    assert rig.metric("kbe_sync_unmatched_acks_total") == 1
    assert rig.window.acked_readings == 2


async def test_untrusted_answers_are_counted_by_reason_logged_and_ignored(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seqs, _frame, digest = rig.send("b-1", 3)
    forger = Signer.from_file(generate_keypair(tmp_path / "forger", "x")[0])
    ack = Ack(
        site_id=SITE,
        batch_id="b-1",
        first_seq=min(seqs),
        last_seq=max(seqs),
        batch_sha256=digest,
        stored=3,
        duplicates=0,
    )
    long_id = "L" * 100
    unsigned = wire.pack_frame(wire.encode_small(ack), codec=wire.CODEC_JSON, msg_id=long_id)
    forged = rig.ack("b-1", digest, seqs, signer=forger)
    not_a_frame = b"garbage that is not a frame"
    not_an_ack = rig.centre.frame(wire.compress(b'{"type": "status"}'), "b-1")
    caplog.set_level(logging.WARNING, logger="kbe.sync")
    for data in (unsigned, forged, not_a_frame, not_an_ack, forged):
        rig.window.receive(data)
    await rig.window.handle_incoming()
    assert rig.metrics.series("kbe_sync_untrusted_down_total") == {
        (("reason", "unsigned"),): 1,
        (("reason", "bad-signature"),): 2,
        (("reason", "malformed"),): 2,
    }
    assert list(rig.window.batches) == ["b-1"]
    assert rig.store.stats().depth == 3
    assert rig.notified == []
    assert rig.rejected == []
    lines = [r.getMessage() for r in caplog.records]
    # One line per reason (rate-limited): what it was, where, which batch it claimed, and that nothing changed.
    assert len(lines) == 3
    first = lines[0]
    assert first.startswith(f"ignored a unsigned message on {rig.topics.ack} ({len(unsigned)} bytes, ")
    assert f"claims batch {'L' * 80!r}" in first
    assert "frame is unsigned" in first
    assert first.endswith("; nothing deleted or set aside")
    assert "claims batch 'b-1'" in lines[1]
    assert "claims batch ''" in lines[2]
    assert lines[2].endswith("frame does not start with the KB magic; nothing deleted or set aside")


async def test_a_rejection_sets_the_rows_aside_and_asks_for_the_status(rig: Rig) -> None:
    _seqs, _frame, digest = rig.send("b-1", 4)
    kept, _, _ = rig.send("b-2", 1)
    rig.window.receive(rig.reject("b-1", digest, detail="seq 3: bad value"))
    await rig.window.handle_incoming()
    assert list(rig.window.batches) == ["b-2"]
    assert rig.window.sent == set(kept)
    assert [r.seq for r in rig.store.pending(100)] == kept
    aside = rig.store.rejected_batches()
    assert [(b.batch_id, b.reason, b.count) for b in aside] == [("b-1", "malformed: seq 3: bad value", 4)]
    assert rig.window.rejected_batches == 1
    assert rig.window.last_rejection == "b-1: malformed: seq 3: bad value"
    assert rig.metric("kbe_sync_batches_rejected_total", reason="malformed") == 1
    assert rig.metric("kbe_sync_readings_rejected_total") == 4
    assert rig.metric("kbe_sync_in_flight") == 1
    assert rig.window.acked_readings == 0
    assert rig.rejected == [1]
    assert rig.notified == []


async def test_a_rejection_without_detail_is_reported_by_its_reason(rig: Rig) -> None:
    _seqs, _frame, d1 = rig.send("b-1", 2)
    s2, _frame, d2 = rig.send("b-2", 2)
    rig.window.receive(rig.reject("b-1", d1))
    rig.window.receive(rig.ack("b-2", d2, s2))
    await rig.window.handle_incoming()
    assert rig.window.last_rejection == "b-1: malformed"
    assert rig.window.rejected_batches == 1
    assert rig.window.acked_readings == 2, "the ack behind a rejection is handled in the same pass"
    assert rig.window.batches == {}
    _s3, _frame, d3 = rig.send("b-3", 1)
    rig.window.receive(rig.reject("b-3", d3, detail="again"))
    await rig.window.handle_incoming()
    assert rig.window.rejected_batches == 2
    assert rig.window.last_rejection == "b-3: malformed: again"
    assert rig.metric("kbe_sync_batches_rejected_total", reason="malformed") == 2
    assert rig.store.rejected_batches()[0].reason == "malformed"
    assert rig.window.acked_readings == 2
    assert rig.window.batches == {}


def _sent_at(rig: Rig, t0: float) -> float:
    """Date every batch in flight at ``t0`` on the monotonic clock (whole seconds: exact sums)."""
    for inf in rig.window.batches.values():
        inf.sent_mono = inf.first_sent_mono = t0
    return t0


def test_an_unanswered_batch_is_resent_with_backoff_up_to_16_timeouts(rig: Rig) -> None:
    _seqs, frame, _digest = rig.send("b-1", 2)
    link = _Link()
    t0 = _sent_at(rig, 1000.0)
    resend = lambda now: rig.window.resend_overdue(cast(MqttLink, link), now)  # noqa: E731
    resend(t0 + ACK_TIMEOUT - 0.01)
    assert link.published == []
    resend(t0 + ACK_TIMEOUT)
    assert link.published == [(rig.topics.batch, frame, 1)]
    assert rig.window.batches["b-1"].sends == 2
    assert rig.metric("kbe_sync_batches_resent_total") == 1
    # The waits double: 2, 4, 8, 16, then stay at 16 timeouts.
    t = t0 + ACK_TIMEOUT
    for factor in (2, 4, 8, 16, 16, 16):
        resend(t + factor * ACK_TIMEOUT - 0.01)
        before = len(link.published)
        resend(t + factor * ACK_TIMEOUT)
        assert len(link.published) == before + 1, factor
        t += factor * ACK_TIMEOUT
    assert rig.window.batches["b-1"].sends == 8
    assert rig.window.batches["b-1"].first_sent_mono == t0
    assert rig.metric("kbe_sync_batches_resent_total") == 7
    assert {p[1] for p in link.published} == {frame}


def test_a_lost_session_resends_everything_at_once_and_restarts_the_backoff(rig: Rig) -> None:
    _s, f1, _d = rig.send("b-1", 1)
    _s, f2, _d = rig.send("b-2", 1)
    link = _Link()
    t0 = _sent_at(rig, 1000.0)
    rig.window.resend_overdue(cast(MqttLink, link), t0 + ACK_TIMEOUT)
    rig.window.resend_overdue(cast(MqttLink, link), t0 + 3 * ACK_TIMEOUT)
    assert rig.window.batches["b-1"].sends == 3
    link.published.clear()
    rig.window.session_lost()
    now = t0 + 3 * ACK_TIMEOUT + 1
    rig.window.resend_overdue(cast(MqttLink, link), now)
    assert [p[1] for p in link.published] == [f1, f2]
    assert [inf.sends for inf in rig.window.batches.values()] == [1, 1]
    # Not a timeout: the next wait is one ack_timeout_s again, not four.
    rig.window.resend_overdue(cast(MqttLink, link), now + ACK_TIMEOUT)
    assert len(link.published) == 4


def test_reset_forgets_what_was_in_flight(rig: Rig) -> None:
    rig.send("b-1", 2)
    rig.window.receive(b"x")
    rig.window.reset()
    assert rig.window.batches == {}
    assert rig.window.sent == set()
    assert not rig.window.incoming


def test_the_incoming_queue_is_bounded_and_keeps_the_newest(rig: Rig) -> None:
    bound = rig.window.incoming.maxlen
    assert bound is not None
    assert bound >= 1000
    for i in range(bound + 5):
        rig.window.receive(str(i).encode())
    assert len(rig.window.incoming) == bound
    assert rig.window.incoming[-1] == str(bound + 4).encode()
    assert rig.window.incoming[0] == b"5"
