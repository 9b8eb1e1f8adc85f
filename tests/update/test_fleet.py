"""The fleet simulation at 20 agent cores (bench/bench_fleet.py runs it at 200): a good release rolls
out in waves to every site; a bad one (breaks polling) stops at the canary wave, which rolls itself
back, and no other site receives it. The receiver's stored statuses then list every site.

Real parts: a private Mosquitto, the reference receiver (subprocess, SQLite), a Modbus TCP emulator,
20 agent cores (the real runtime, each with its own key, store and update folder) in this process.
"""

from __future__ import annotations

from pathlib import Path

from bench.bench_fleet import Fleet, scenario
from provisioning.centre.overview import site_rows
from sync.receiver_db import open_db
from tests.conftest import free_port
from tests.sync.conftest import query, wait_for

AGENTS = 20


def test_fleet_rolls_a_good_release_to_all_and_stops_a_bad_one_at_the_canary(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, AGENTS, canary=2, poll_s=1.0)
    try:
        fleet.start()
        figures = scenario(fleet, watch_s=3.0, fractions=[0.5])
        assert figures["waves"] == [2, 8, 10]
        assert any("meter-1" in r for r in figures["bad_reasons"]), figures["bad_reasons"]
        assert figures["update_bytes_patch"] < figures["update_bytes_whole"] / 2
        canary, others = fleet.sites[:2], fleet.sites[2:]
        for site in canary:
            j = fleet.journal(site)
            assert j["failed"] == [2], "the canary rolled version 2 back and kept it aside"
            assert (tmp_path / "sites" / site / "updates" / "failed" / "2").is_dir()
        for site in others:
            assert fleet.journal(site)["highest"] == 1, f"{site} never received version 2"
        wait_for(lambda: all(fleet.version(s) == 1 for s in fleet.sites), 20, "every site back on version 1")

        # A release bad on one canary only: the wave fails its threshold, the other canary (which
        # committed) is sent a signed rollback to the version it ran before, and goes back to it.
        dead = free_port()
        mixed = fleet.roll(
            lambda s: fleet.bad_patch(s, dead) if s == canary[0] else fleet.good_patch(s, 3)["new"], 3, 3.0, [0.5]
        )
        assert mixed.stopped
        assert mixed.waves[0].committed == [canary[1]]
        assert len(mixed.compensated) == 1
        rollback_id = mixed.compensated[0]
        assert fleet.link is not None
        ok = fleet.link.wait(lambda: any(r.phase == "committed" for r in fleet.link.replies_to(rollback_id)), 30)
        assert ok, fleet.link.replies_to(rollback_id)
        wait_for(lambda: fleet.version(canary[1]) == 1, 20, "the committed canary back on version 1")
        assert fleet.journal(others[0])["highest"] == 1
    finally:
        fleet.stop()
    # What the centre tools see: every site's status stored by the receiver.
    db = open_db(fleet.db_url)
    try:
        rows = {r.site_id: r for r in site_rows(db)}
    finally:
        db.close()
    assert sorted(rows) == fleet.sites
    assert {r.config_version for r in rows.values()} == {1}
    assert all(r.healthy for r in rows.values())
    for version in (2, 3):
        replies = query(fleet.db_url, f"SELECT DISTINCT site_id FROM command_replies WHERE version = {version}")
        assert sorted(s for (s,) in replies) == fleet.sites[:2], f"only the canary ever answered version {version}"
