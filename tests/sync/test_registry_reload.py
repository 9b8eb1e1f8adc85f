"""The receiver's site registry follows its file without a restart (mtime at most once a second, SIGHUP)."""

from __future__ import annotations

import os
import time

from sync import wire
from sync.receiver import Receiver
from sync.receiver_db import open_db
from sync.signing import Signer, SiteRegistry, generate_keypair
from sync.wire import Ack, Batch, BufferStats, WireReading
from tests.sync.conftest import SITE, query


def frame(signer: Signer, site: str, bid: str, seqs: tuple[int, ...]) -> bytes:
    rs = [WireReading(seq=s, device="d", point="p", ts=float(s), value=float(s)) for s in seqs]
    b = Batch(site_id=site, batch_id=bid, first_seq=min(seqs), last_seq=max(seqs), created_at=0.0,
              readings=rs, buffer=BufferStats(depth=0, bytes=0))
    return signer.frame(wire.encode_batch_payload(b), bid)


def test_a_site_added_while_the_receiver_runs_is_stored_from_its_next_batch(tmp_path, site_keys):
    url = f"sqlite:///{tmp_path / 'centre.db'}"
    db = open_db(url)
    registry = SiteRegistry.load(site_keys.registry, check_every_s=0.3)
    rx = Receiver(db, registry, Signer.from_file(site_keys.centre_key), name="rx")
    new_key, _ = generate_keypair(tmp_path / "keys", "bn-new-02")
    signer = Signer.from_file(new_key)
    first = rx.handle("kbe/bn-new-02/up/batch", frame(signer, "bn-new-02", "n-1", (1, 2)))
    # Issue 12: nobody's key vouches for an unknown site's frame, so it is recorded, not answered.
    assert first is None
    assert rx.counters["rejected_unknown-site"] == 1
    assert query(url, "SELECT site_id, reason, batch_id FROM rejections") == [("bn-new-02", "unknown-site", None)]

    text = site_keys.registry.read_text() + "  bn-new-02:\n    public_keys: [keys/bn-new-02.pub]\n"
    tmp = site_keys.registry.with_name("sites.tmp")
    tmp.write_text(text)
    os.replace(tmp, site_keys.registry)  # how the enrolment service writes it
    time.sleep(0.4)
    again = rx.handle("kbe/bn-new-02/up/batch", frame(signer, "bn-new-02", "n-1", (1, 2)))
    assert isinstance(again, Ack)
    assert again.stored == 2
    assert query(url, "SELECT site_id, seq FROM readings ORDER BY seq") == [("bn-new-02", 1), ("bn-new-02", 2)]
    assert registry.reloads == 1
    # The old site is still there.
    assert SITE in registry
    db.close()


def test_a_broken_registry_keeps_the_previous_one_and_sighup_reloads_a_replaced_key(tmp_path, site_keys):
    registry = SiteRegistry.load(site_keys.registry, check_every_s=3600)
    old = registry.keys_for(SITE)
    assert old is not None
    site_keys.registry.write_text("sites: {bn-x: {public_keys: [missing.pub]}}\n")
    registry.request_reload()
    assert registry.keys_for(SITE) == old, "a half-edited file never drops the sites"
    assert registry.reload_errors == 1
    assert "missing.pub" in registry.last_error

    # The registry file unchanged, the key file replaced (a rotation): only a SIGHUP notices.
    site_keys.registry.write_text(f"sites:\n  {SITE}:\n    public_keys: [keys/{SITE}.pub]\n")
    registry.request_reload()
    assert registry.keys_for(SITE) == old
    site_keys.pub.unlink()
    site_keys.key.unlink()
    new_key, _ = generate_keypair(site_keys.key.parent, SITE)
    assert registry.keys_for(SITE) == old  # no reload before the interval, file unchanged
    registry.request_reload()
    keys = registry.keys_for(SITE)
    assert keys is not None
    assert keys != old
    signer = Signer.from_file(new_key)
    assert wire.unpack_frame(frame(signer, SITE, "b", (1,))).signature
    keys[0].verify(signer.sign(b"x"), b"x")


def test_a_batch_right_after_enrolment_is_not_refused_within_the_check_interval(tmp_path, site_keys):
    """The race the end-to-end test found: key added, first batch in the same second."""
    url = f"sqlite:///{tmp_path / 'centre.db'}"
    db = open_db(url)
    registry = SiteRegistry.load(site_keys.registry, check_every_s=3600)
    rx = Receiver(db, registry, Signer.from_file(site_keys.centre_key), name="rx")
    new_key, _ = generate_keypair(tmp_path / "keys", "bn-new-03")
    text = site_keys.registry.read_text() + "  bn-new-03:\n    public_keys: [keys/bn-new-03.pub]\n"
    tmp = site_keys.registry.with_name("sites.tmp")
    tmp.write_text(text)
    os.replace(tmp, site_keys.registry)
    ack = rx.handle("kbe/bn-new-03/up/batch", frame(Signer.from_file(new_key), "bn-new-03", "n-1", (1,)))
    assert isinstance(ack, Ack)
    # An unknown site with the file unchanged does not reload it.
    assert rx.handle("kbe/bn-nobody/up/batch", frame(Signer.from_file(new_key), "bn-nobody", "x", (1,))) is None
    assert rx.counters["rejected_unknown-site"] == 1
    assert registry.reloads == 1
    db.close()


def test_sighup_makes_the_running_receiver_reload(tmp_path, site_keys, receivers):
    """The receiver process: a SIGHUP reloads the registry even when its file did not change."""
    import signal

    from tests.brokers import Mosquitto

    with Mosquitto(tmp_path / "broker") as broker:
        rx = receivers(broker, f"sqlite:///{tmp_path / 'centre.db'}", site_keys.registry)
        rx.wait_subscribed()
        time.sleep(1.5)
        assert b"reloaded" not in rx.log.read_bytes()
        rx.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while b"site registry" not in rx.log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"site registry {site_keys.registry} reloaded: 1 sites".encode() in rx.log.read_bytes()
        assert rx.proc.poll() is None
