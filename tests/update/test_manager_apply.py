"""The manager applying an update: what it refuses (and says), a crash between journal and pointer,
and rollbacks that reuse a kept version or carry a config of their own. Real files, no host."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.update.journal import Pending, load_journal
from agent.update.manager import UpdateManager
from kernel.errors import ConfigError
from kernel.kinds import KindRegistry, discover
from tests.update.test_manager_watch import Host
from tests.update.test_update_units import _cmd, _manager, _site


def committed_at(path: Path, *versions: int) -> UpdateManager:
    """Releases ``versions`` applied and committed in turn; the manager of the next start."""
    mgr = _manager(path)
    for v in versions:
        out = mgr.handle(_cmd(f"c{v}", {"type": "release", "version": v, "release": f"r{v}"}))
        assert out.outcome == "accepted", out.reason
        mgr = _manager(path)
        assert mgr.journal.pending is not None
        mgr.journal.pending.watch_s = 0.1
        asyncio.run(mgr.run(Host()))
        mgr = _manager(path)
    return mgr


def test_an_update_during_a_watch_is_refused_with_the_version_watched(tmp_path: Path) -> None:
    mgr = _manager(_site(tmp_path))
    assert mgr.handle(_cmd("a", {"type": "release", "version": 2, "release": "r"})).outcome == "accepted"
    out = mgr.handle(_cmd("b", {"type": "release", "version": 3, "release": "r"}))
    assert (out.outcome, out.reason) == ("refused", "version 2 is still being watched; try again after it")


def test_a_malformed_update_names_every_problem(tmp_path: Path) -> None:
    mgr = _manager(_site(tmp_path))
    out = mgr.handle(_cmd("a", {"type": "bogus", "version": -1}))
    assert out.outcome == "refused"
    assert len(out.reason.split("; ")) >= 2, out.reason
    assert "XX" not in out.reason


def test_a_rollback_must_go_to_an_older_version(tmp_path: Path) -> None:
    mgr = committed_at(_site(tmp_path), 1)
    out = mgr.handle(_cmd("r", {"type": "config", "version": 1, "rollback": True}))
    assert (out.outcome, out.reason) == (
        "refused",
        "a rollback goes to an older version; 1 is not older than 1",
    )


def test_an_update_must_be_newer_than_every_version_seen(tmp_path: Path) -> None:
    mgr = committed_at(_site(tmp_path), 2)
    out = mgr.handle(_cmd("x", {"type": "release", "version": 2, "release": "r"}))
    assert out.outcome == "refused"
    assert out.reason == "version 2 is not newer than 2 (a replay, or a downgrade not signed as a rollback)"


def test_a_crash_between_the_journal_and_the_pointer_aborts_the_update(
    tmp_path: Path, monkeypatch: Any
) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)

    def cut(version: int) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(mgr.versions, "switch", cut)
    with pytest.raises(OSError, match="power cut"):
        mgr.handle(_cmd("a", {"type": "release", "version": 1, "release": "r"}))
    j = load_journal(mgr.versions.journal_path)
    assert j.state == "switching"
    assert j.pending is not None
    assert (j.pending.command_id, j.pending.version, j.pending.previous) == ("a", 1, 0)
    monkeypatch.undo()
    mgr = _manager(path)
    assert mgr.current == 0
    assert mgr.journal.last is not None
    assert mgr.journal.last.outcome == "aborted"


def test_a_rollback_reuses_the_kept_version_as_it_is(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = committed_at(path, 1, 2)
    (mgr.versions.path(1) / "models").mkdir()
    (mgr.versions.path(1) / "models" / "m.tflite").write_bytes(b"kept")
    out = mgr.handle(_cmd("r", {"type": "config", "version": 1, "rollback": True}))
    assert out.outcome == "accepted", out.reason
    assert mgr.current == 1
    assert (mgr.versions.path(1) / "models" / "m.tflite").read_bytes() == b"kept"


def test_a_rollback_with_a_config_of_its_own_installs_that_config(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = committed_at(path, 1, 2)
    doc = yaml.safe_load(path.read_text())
    doc["logging"] = {"level": "DEBUG"}
    out = mgr.handle(_cmd("r", {"type": "config", "version": 1, "rollback": True, "config": doc}))
    assert out.outcome == "accepted", out.reason
    assert mgr.versions.raw(1)["logging"] == {"level": "DEBUG"}


def test_the_journal_records_the_whole_pending_update(tmp_path: Path) -> None:
    mgr = _manager(_site(tmp_path))
    body = {"type": "release", "version": 1, "release": "r1", "watch_s": 45, "min_success": 0.7}
    out = mgr.handle(_cmd("a", body))
    assert (out.outcome, out.reason) == ("accepted", "version 1 staged and switched in (was 0); watching 45 s")
    j = load_journal(mgr.versions.journal_path)
    assert j.pending == Pending("a", 1, "release", 0, 45.0, 0.7, "r1", 0)
    assert (j.state, j.highest) == ("watching", 1)


def test_relative_paths_in_an_update_resolve_beside_the_sites_own_file(tmp_path: Path) -> None:
    """The candidate is read like the site's own file: a relative store path is the same store."""
    path = _site(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["store"]["path"] = "store.db"
    path.write_text(yaml.safe_dump(doc))
    mgr = _manager(path)
    out = mgr.handle(_cmd("a", {"type": "config", "version": 1, "patch": {"logging": {"level": "DEBUG"}},
                                "base_version": 0}))  # fmt: skip
    assert out.outcome == "accepted", out.reason
    cfg, _mgr = UpdateManager.resolve(path)
    assert cfg.store.path == tmp_path / "store.db"
    assert cfg.logging.level == "DEBUG"


def test_the_registry_the_manager_is_given_reads_the_site_and_every_version(tmp_path: Path) -> None:
    """A caller with a kind registry of its own (here one kind more than the discovered ones) has the
    site's file, an update and the version ``current`` selects read with it, not with the default."""
    path = _site(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["devices"].append({"driver": "probe", "name": "p1"})
    path.write_text(yaml.safe_dump(doc))
    kinds = KindRegistry({**discover(), "probe": "tests.update.probe_kind"})
    with pytest.raises(ConfigError, match="probe"):
        UpdateManager.resolve(path)  # the discovered kinds do not know it
    cfg, mgr = UpdateManager.resolve(path, kinds)
    assert mgr is not None
    assert [d.driver for d in cfg.devices] == ["system", "probe"]
    update = {**doc, "devices": [*doc["devices"], {"driver": "probe", "name": "p2"}], "logging": {"level": "DEBUG"}}
    out = mgr.handle(_cmd("k", {"type": "config", "version": 1, "config": update}))
    assert (out.outcome, out.reason) == ("accepted", "version 1 staged and switched in (was 0); watching 60 s")
    cfg, mgr = UpdateManager.resolve(path, kinds)  # the restart into version 1, still under watch
    assert mgr is not None
    assert (mgr.current, mgr.journal.state) == (1, "watching")
    assert [d.name for d in cfg.devices] == ["host", "p1", "p2"]
    assert cfg.logging.level == "DEBUG"
