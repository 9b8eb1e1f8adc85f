"""The manager at start-up: which config it runs, and crash recovery.

The promise: whatever step a crash interrupted, the next start runs one whole version, and the
journal says what happened. Real files (the versions folder, the journal); no host, no agent.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from agent.update.journal import Pending, load_journal, save_journal
from agent.update.manager import UpdateManager
from kernel.errors import ConfigError
from kernel.kinds import KindRegistry
from tests.update.test_manager_apply import committed_at
from tests.update.test_manager_watch import Host
from tests.update.test_update_units import _cmd, _manager, _site


def test_a_site_without_updates_runs_its_own_file_and_has_no_manager(tmp_path: Path) -> None:
    path = _site(tmp_path)
    doc = path.read_text().replace("update:", "unused_update:")
    path.write_text(doc.split("unused_update:")[0])
    cfg, mgr = UpdateManager.resolve(path)
    assert mgr is None
    assert cfg.update is None
    assert cfg.site.id == "bn-unit-01"
    assert not (tmp_path / "updates").exists()


def test_an_unusable_update_dir_is_a_config_error_naming_the_dir_and_the_cause(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    path = _site(tmp_path)
    text = path.read_text().replace(str(tmp_path / "updates"), str(tmp_path / "afile" / "updates"))
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        UpdateManager.resolve(path)
    assert info.value.source == str(path)
    assert info.value.problems == [
        f"update.dir: cannot use {str(tmp_path / 'afile' / 'updates')!r}: Not a directory"
    ]


def test_a_damaged_journal_takes_the_floor_from_set_aside_versions_too(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = committed_at(path, 3)
    (mgr.versions.failed_dir / "9").mkdir()
    (mgr.versions.failed_dir / "notes").mkdir()  # an operator's folder: not a version
    mgr.versions.journal_path.write_text("{not json")
    mgr = _manager(path)
    assert mgr.journal.highest == 9
    assert mgr.current == 3
    assert mgr.journal.state == "idle"
    assert load_journal(mgr.versions.journal_path).highest == 9, "the fresh journal is written"


def test_a_damaged_journal_on_a_site_without_versions_starts_at_zero(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    mgr.versions.journal_path.write_text("[]")
    mgr = _manager(path)
    assert mgr.journal.highest == 0
    assert mgr.handle(_cmd("a", {"type": "release", "version": 1, "release": "r"})).outcome == "accepted"


def test_an_interrupted_switch_is_aborted_with_its_reason_and_time(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = committed_at(path, 1)
    j = mgr.journal
    j.state, j.pending = "switching", Pending("b", 2, "config", 1, 5.0)
    save_journal(mgr.versions.journal_path, j)
    _cfg, mgr2 = UpdateManager.resolve(path)
    assert mgr2 is not None
    assert mgr2.current == 1
    j = load_journal(mgr2.versions.journal_path)
    assert (j.state, j.pending) == ("idle", None)
    assert j.last is not None
    assert (j.last.command_id, j.last.version, j.last.outcome) == ("b", 2, "aborted")
    assert j.last.reason == "interrupted before the switch; still on version 1"
    assert abs(j.last.ts - time.time()) < 60
    assert not j.last.reported


def test_a_switch_that_landed_starts_the_watch_and_counts_the_boot_on_disk(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    assert mgr.handle(_cmd("a", {"type": "release", "version": 1, "release": "r1"})).outcome == "accepted"
    j = load_journal(mgr.versions.journal_path)
    j.state = "switching"  # the crash came after the rename, before the journal said "watching"
    save_journal(mgr.versions.journal_path, j)
    mgr = _manager(path)
    j = load_journal(mgr.versions.journal_path)
    assert j.state == "watching"
    assert j.pending is not None
    assert (j.pending.version, j.pending.boots) == (1, 1)
    assert j.last is None


def test_too_many_starts_during_a_watch_roll_back_with_the_count_in_the_reason(tmp_path: Path) -> None:
    path = _site(tmp_path, max_watch_boots=1)
    mgr = committed_at(path, 1)
    assert mgr.handle(_cmd("b", {"type": "release", "version": 2, "release": "r2"})).outcome == "accepted"
    mgr = _manager(path)  # the first start of the watch is allowed
    assert (mgr.current, mgr.journal.state) == (2, "watching")
    _cfg, mgr = UpdateManager.resolve(path)  # the second is one too many
    assert mgr is not None
    assert mgr.current == 1
    j = load_journal(mgr.versions.journal_path)
    assert (j.state, j.pending, j.failed) == ("idle", None, [2])
    assert j.last is not None
    assert j.last.outcome == "rolled_back"
    assert (
        j.last.reason == "rolled back to version 1: the agent started 2 times during the watch of version 2"
    )
    assert (mgr.versions.failed_dir / "2" / "site.json").is_file()
    assert not mgr.versions.path(2).exists()


def test_a_pending_update_outside_a_watch_is_dropped(tmp_path: Path) -> None:
    """A journal that is idle but still names a pending update (written by hand, or by an older agent)
    does not block the next update."""
    path = _site(tmp_path)
    mgr = committed_at(path, 1)
    j = mgr.journal
    j.pending = Pending("x", 5, "config", 1, 5.0, boots=99)
    save_journal(mgr.versions.journal_path, j)
    mgr = _manager(path)
    j = load_journal(mgr.versions.journal_path)
    assert (j.state, j.pending) == ("idle", None)
    assert j.last is not None
    assert j.last.outcome == "committed", "no watch, so no start is counted and nothing rolls back"
    assert mgr.current == 1
    assert mgr.handle(_cmd("c", {"type": "release", "version": 2, "release": "r2"})).outcome == "accepted"


def _break(mgr: UpdateManager, version: int, doc: object) -> None:
    (mgr.versions.path(version) / "site.json").write_text(json.dumps(doc))


def test_a_watched_version_that_does_not_load_rolls_back_to_the_whole_previous_one(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    out = mgr.handle(_cmd("a", {"type": "config", "version": 1, "patch": {"logging": {"level": "DEBUG"}},
                                "base_version": 0}))  # fmt: skip
    assert out.outcome == "accepted"
    mgr = _manager(path)
    mgr.journal.pending.watch_s = 0.1  # type: ignore[union-attr]
    asyncio.run(mgr.run(Host()))
    assert mgr.handle(_cmd("b", {"type": "release", "version": 2, "release": "r2"})).outcome == "accepted"
    raw = json.loads((mgr.versions.path(2) / "site.json").read_text())
    raw["logging"] = {"level": "LOUD"}
    _break(mgr, 2, raw)  # half-written by a crash, or damaged on the disk
    cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert cfg.logging.level == "DEBUG", "version 1 runs, read from its own folder"
    assert mgr.running is cfg
    assert mgr.current == 1
    j = load_journal(mgr.versions.journal_path)
    assert (j.state, j.pending, j.failed) == ("idle", None, [2])
    assert j.last is not None
    assert j.last.outcome == "rolled_back"
    assert j.last.reason.startswith("rolled back to version 1: version 2 does not load: logging.level: ")


def test_two_problems_in_a_version_that_does_not_load_are_joined_in_the_reason(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    assert mgr.handle(_cmd("a", {"type": "release", "version": 1, "release": "r1"})).outcome == "accepted"
    raw = json.loads((mgr.versions.path(1) / "site.json").read_text())
    raw["logging"] = {"level": "LOUD"}
    raw["store"]["commit_interval_s"] = "often"
    _break(mgr, 1, raw)
    cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.current == 0
    assert cfg.update is not None
    assert mgr.journal.last is not None
    reason = mgr.journal.last.reason
    assert reason.startswith("rolled back to version 0: version 1 does not load: "), reason
    assert "logging.level" in reason
    assert "store.commit_interval_s" in reason
    problems = reason.split("does not load: ")[1].split("; ")
    assert sorted(p.split(":")[0] for p in problems) == ["logging.level", "store.commit_interval_s"], reason


def test_an_unreadable_version_rolls_back_naming_the_read_error(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    assert mgr.handle(_cmd("a", {"type": "release", "version": 1, "release": "r1"})).outcome == "accepted"
    (mgr.versions.path(1) / "site.json").write_text("{half a file")
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.current == 0
    assert mgr.journal.last is not None
    assert mgr.journal.last.reason.startswith(
        "rolled back to version 0: version 1 does not load: version 1 cannot be read: "
    )


def test_a_committed_version_that_no_longer_loads_falls_back_to_the_sites_own_file(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = committed_at(path, 1, 2)
    raw = json.loads((mgr.versions.path(2) / "site.json").read_text())
    raw["logging"] = {"level": "LOUD"}
    _break(mgr, 2, raw)
    cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.current == 0, "no update is watched: the technician's file runs"
    assert not mgr.versions.pointer.is_symlink(), "the pointer is removed, not left dangling"
    assert cfg.update is not None
    assert mgr.running is cfg
    j = load_journal(mgr.versions.journal_path)
    assert (j.state, j.failed) == ("idle", [])
    assert j.last is not None
    assert j.last.outcome == "committed", "no rollback is recorded for a version that was not watched"
    assert mgr.versions.path(2).exists(), "the version is kept for the operator"


def test_a_watch_of_another_version_does_not_roll_back_the_one_that_fails_to_load(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = committed_at(path, 1)
    j = mgr.journal
    j.state, j.pending = "watching", Pending("z", 7, "config", 1, 5.0)  # names a version not selected
    save_journal(mgr.versions.journal_path, j)
    raw = json.loads((mgr.versions.path(1) / "site.json").read_text())
    raw["logging"] = {"level": "LOUD"}
    _break(mgr, 1, raw)
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.current == 0
    assert mgr.versions.path(1).exists()
    assert mgr.journal.pending is not None
    assert mgr.journal.pending.version == 7


def test_the_running_agent_attaches_to_the_chosen_version_without_recovering_it_again(tmp_path: Path) -> None:
    """After the hand-over, the exec'ed agent takes the manager of the config the checking process
    chose: the same version and journal (a start under watch counted once, by ``resolve``), the
    running config an update is checked against, and the kind registry it is given."""
    path = _site(tmp_path)
    assert _manager(path).handle(_cmd("a", {"type": "release", "version": 1, "release": "r1"})).outcome == "accepted"
    cfg, chosen = UpdateManager.resolve(path)  # the checking process, after the restart
    assert chosen is not None
    kinds = KindRegistry()
    mgr = UpdateManager.attach(cfg, path, kinds)
    assert mgr.running is cfg
    assert mgr.kinds is kinds
    assert (mgr.ucfg, mgr.bootstrap) == (cfg.update, path)
    assert (mgr.current, mgr.journal.state) == (1, "watching")
    assert mgr.journal.pending is not None
    assert mgr.journal.pending.boots == 1, "the start is counted once, by resolve"
    on_disk = load_journal(mgr.versions.journal_path).pending
    assert on_disk is not None
    assert on_disk.boots == 1
    out = mgr.handle(_cmd("b", {"type": "release", "version": 2, "release": "r2"}))
    assert (out.outcome, out.reason) == ("refused", "version 1 is still being watched; try again after it")
