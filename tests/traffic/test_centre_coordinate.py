"""``edge-agent centre coordinate``: the corridor file is checked, the junctions' loop counts are
read from the receiver's database (SQLite and PostgreSQL) and the next plan is the rig's
(coordplan); ``--dry-run`` prints it and keeps nothing."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from agent.cli import cli, main
from control.traffic import coordplan
from provisioning.centre import corridor as cor
from sync.receiver_db import open_db
from sync.wire import Batch, BufferStats, WireReading
from tests.sync.conftest import db_url  # noqa: F401 - fixture
from tests.traffic.corridor_sites import SITES, write_corridor

# Vehicles per 5 s period at each junction's loops: heavy westbound arterial, a light side street.
PER_PERIOD = {"loop_w": 1, "loop_e": 3, "loop_ns": 1}
PERIODS = 24  # two minutes


def _store_counts(url: str, now: float) -> None:
    db = open_db(url)
    try:
        for site in SITES:
            j = f"j{SITES.index(site) + 1}"
            readings, seq = [], 0
            for p in range(PERIODS):
                for loop, n in PER_PERIOD.items():
                    seq += 1
                    readings.append(WireReading(seq=seq, device=j, point=f"detector.{loop}.count",
                                                ts=now - 5.0 * (PERIODS - p), value=n, unit="veh"))  # fmt: skip
            seq += 1  # another point and an old count: not counted
            readings.append(WireReading(seq=seq, device=j, point="signal.state", ts=now, value="ew=G"))
            seq += 1
            readings.append(WireReading(seq=seq, device=j, point="detector.loop_e.count", ts=now - 3600, value=999))
            batch = Batch(site_id=site, batch_id=uuid.uuid4().hex, first_seq=1, last_seq=seq, created_at=now,
                          readings=readings, buffer=BufferStats(depth=0, bytes=0))  # fmt: skip
            db.store_batch(batch, "test")
    finally:
        db.close()


def test_the_next_plan_comes_from_the_stored_counts(tmp_path: Path, db_url: str) -> None:  # noqa: F811
    path = write_corridor(tmp_path, [5020, 5021, 5022])
    now = time.time()
    _store_counts(db_url, now)
    c = cor.load_corridor(path)
    db = open_db(db_url)
    try:
        counts = cor.read_counts(db, c, now - 300)
    finally:
        db.close()
    for n in counts:
        assert n.loops == {loop: float(v * PERIODS) for loop, v in PER_PERIOD.items()}
        assert abs(n.hours - PERIODS * 5 / 3600) < 1e-9
    start = cor.configured_plan(c)
    assert start.start_s(0) == 8.0  # offset 0 + the ns split before ew
    plan = cor.next_corridor_plan(c, counts, start, now)
    # The same function the rig uses, given the same flows (veh/h).
    flows = [{"w": 720.0, "e": 2160.0, "ns": 720.0}] * 3
    demands = [coordplan.junction_demands(ix, f, 1.0) for ix, f in zip(c.junctions, flows, strict=True)]
    assert plan == coordplan.next_plan(c.spec, demands, "ew", [720.0] * 2, [2160.0] * 2, start, now)
    assert plan.cycle_s == 25.0  # busy: toward Webster's, one 5 s step
    # Westbound is heavier: each junction's arterial green starts 8 s (100 m at 12.5 m/s) *before*
    # its western neighbour's, i.e. 17 s after in a 25 s cycle (0, 17, 9), reached from the
    # configured 0, 4, 8 by steps of at most 10 s the short way round (j2: 4 - 10 = 19).
    assert plan.offsets_s == (0.0, 19.0, 9.0), plan.offsets_s
    bodies = cor.command_bodies(c, plan)
    assert [s for s, _ in bodies] == list(SITES)
    assert all(b["action"] == "coordinate" and b["from_s"] == plan.anchor_s >= now for _, b in bodies)
    assert all(sum(b["splits"].values()) == 25.0 for _, b in bodies)
    assert all("until_s" not in b for _, b in bodies)  # by default a plan runs until the next one
    bodies = cor.command_bodies(c, plan, valid_for_s=900)
    assert all(b["until_s"] == plan.anchor_s + 900 for _, b in bodies)

    out = CliRunner().invoke(cli, ["centre", "coordinate", "--corridor", str(path), "--db", db_url, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "test-corridor: cycle 25 s" in out.output
    assert "kb-cor-2/j2: start" in out.output
    assert not cor.state_path(path).exists()  # a dry run keeps nothing


def test_a_junction_without_counts_leaves_the_plan_unchanged(tmp_path: Path) -> None:
    path = write_corridor(tmp_path, [5020, 5021, 5022])
    url = f"sqlite:///{tmp_path / 'centre.db'}"
    open_db(url).close()
    out = CliRunner().invoke(cli, ["centre", "coordinate", "--corridor", str(path), "--db", url, "--dry-run"])
    assert out.exit_code == 1
    assert "no loop counts in the window from kb-cor-1/j1, kb-cor-2/j2, kb-cor-3/j3" in str(out.exception)


def test_a_bad_corridor_file_lists_every_problem_and_exits_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write_corridor(tmp_path, [5020, 5021, 5022], stage="ns_through", westbound="east")
    doc = yaml.safe_load(path.read_text())
    doc["junctions"][2]["position_m"] = 100.0
    doc["junctions"][1]["intersection"] = "j9"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SystemExit) as exc:
        main(["centre", "coordinate", "--corridor", str(path), "--db", "sqlite:///x.db", "--dry-run"])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    text = "\n".join(lines)
    assert "junctions: positions must increase west to east" in text
    assert "junctions[1].intersection: 'j9' is not in kb-cor-2.yaml" in text
    assert "junctions[0].intersection: j1 coordinates 'ew', not 'ns_through'" in text
    assert "westbound: 'east' is not a signal group of j1 (junctions[0])" in text
    assert len(lines) == 6  # j1 and j3 each: the stage and the westbound group; positions; j9
