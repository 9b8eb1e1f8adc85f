"""Unit tests of the update parts: merge patches, the journal, versions and the pointer, the manager's
checks and crash recovery, model validation, and the health gate's decisions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.update.gate import GatePolicy, Uplink, watch
from agent.update.journal import Journal, Pending, load_journal, save_journal
from agent.update.manager import UpdateManager
from agent.update.merge import apply_merge_patch, make_merge_patch
from kernel.commands import IncomingCommand
from models.config import PACKAGED_MODELS

# -- merge patches (RFC 7396) --------------------------------------------------------------------

scalars = st.one_of(st.booleans(), st.integers(), st.text(max_size=5), st.floats(allow_nan=False))
docs = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12,
)
objects = st.dictionaries(st.text(max_size=4), docs, max_size=5)


@given(objects, objects)
@settings(max_examples=150, deadline=None)
def test_a_made_patch_turns_old_into_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    patch = make_merge_patch(old, new)
    assert apply_merge_patch(old, patch) == new
    assert apply_merge_patch(new, patch) == new, "applying a patch twice changes nothing more"


def test_rfc7396_examples() -> None:
    # RFC 7396, appendix A (a selection)
    assert apply_merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert apply_merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert apply_merge_patch({"a": "b"}, {"a": None}) == {}
    assert apply_merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert apply_merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert apply_merge_patch(["a", "b"], ["c", "d"]) == ["c", "d"]
    assert apply_merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


# -- a site on disk ------------------------------------------------------------------------------


def _site(tmp_path: Path, **update: Any) -> Path:
    doc = {
        "site": {"id": "bn-unit-01", "name": "Unit", "location": {"lat": 21.0, "lon": 106.0}},
        "devices": [{"driver": "system", "name": "host"}],
        "store": {"path": str(tmp_path / "store.db")},
        "health": {"listen": None},
        "update": {"dir": str(tmp_path / "updates"), **update},
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _cmd(cid: str, body: dict[str, Any]) -> IncomingCommand:
    now = time.time()
    return IncomingCommand(cid, "bn-unit-01", "update", now, now + 60, body)


def _manager(path: Path) -> UpdateManager:
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    return mgr


def test_config_updates_are_checked_before_anything_changes(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    base = yaml.safe_load(path.read_text())
    refusals = {
        "moved-store": {"type": "config", "version": 1, "config": {**base, "store": {"path": str(tmp_path / "x.db")}}},
        "new-site": {"type": "config", "version": 1, "config": {**base, "site": {**base["site"], "id": "bn-x"}}},
        "no-update": {"type": "config", "version": 1, "config": {k: v for k, v in base.items() if k != "update"}},
        "wrong-base": {"type": "config", "version": 1, "patch": {"logging": {"level": "DEBUG"}}, "base_version": 3},
        "both": {"type": "config", "version": 1, "config": base, "patch": {}},
        "bad-field": {"type": "config", "version": 1, "patch": {"logging": {"level": "LOUD"}}, "base_version": 0},
        "not-older": {"type": "config", "version": 4, "rollback": True},
    }
    for cid, body in refusals.items():
        out = mgr.handle(_cmd(cid, body))
        assert out.outcome == "refused", cid
    assert mgr.current == 0
    assert not (tmp_path / "updates" / "current").exists()
    assert sorted(p.name for p in (tmp_path / "updates" / "versions").iterdir()) == [], "nothing staged is left"
    out = mgr.handle(_cmd("ok", {"type": "config", "version": 3, "patch": {"logging": {"level": "DEBUG"}},
                                 "base_version": 0, "watch_s": 5}))  # fmt: skip
    assert out.outcome == "accepted", out.reason
    assert mgr.current == 3
    assert mgr.journal.state == "watching"
    assert mgr.handle(_cmd("busy", {"type": "release", "version": 4, "release": "r"})).outcome == "refused"
    # The next start runs version 3.
    cfg, mgr2 = UpdateManager.resolve(path)
    assert cfg.logging.level == "DEBUG"
    assert mgr2 is not None
    assert mgr2.journal.pending is not None
    assert mgr2.journal.pending.boots == 1


def test_recovery_finishes_or_undoes_an_interrupted_switch(tmp_path: Path) -> None:
    path = _site(tmp_path, max_watch_boots=2)
    mgr = _manager(path)
    assert mgr.handle(_cmd("a", {"type": "release", "version": 1, "release": "r1", "watch_s": 5})).outcome == "accepted"
    journal_path = tmp_path / "updates" / "journal.json"

    # Killed after the journal said "switching" but before the pointer moved: aborted, old version runs.
    j = load_journal(journal_path)
    j.state = "switching"
    j.pending = Pending("b", 2, "config", 1, 5.0)
    save_journal(journal_path, j)
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.current == 1
    assert mgr.journal.state == "idle"
    assert mgr.journal.last is not None
    assert mgr.journal.last.outcome == "aborted"

    # Killed after the pointer moved: the watch starts (again).
    assert mgr.handle(_cmd("c", {"type": "release", "version": 2, "release": "r2"})).outcome == "accepted"
    j = load_journal(journal_path)
    j.state = "switching"
    save_journal(journal_path, j)
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.journal.state == "watching"
    assert mgr.current == 2

    # Crash-looping during the watch: rolled back at the start after max_watch_boots.
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.current == 2
    assert mgr.journal.pending is not None
    assert mgr.journal.pending.boots == 2
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.current == 1, "the third start in the watch rolls back"
    assert mgr.journal.last is not None
    assert mgr.journal.last.outcome == "rolled_back"
    assert (tmp_path / "updates" / "failed" / "2").is_dir()

    # A rollback interrupted half-way is finished on the next start.
    assert mgr.handle(_cmd("d", {"type": "release", "version": 3, "release": "r3"})).outcome == "accepted"
    j = load_journal(journal_path)
    j.state = "rolling_back"
    save_journal(journal_path, j)
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.current == 1
    assert mgr.journal.state == "idle"
    # A signed rollback to an older kept version.
    assert mgr.handle(_cmd("e", {"type": "config", "version": 0, "rollback": True})).outcome == "refused"


def test_the_pointer_switch_is_one_rename(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    assert mgr.handle(_cmd("a", {"type": "release", "version": 1, "release": "r"})).outcome == "accepted"
    pointer = tmp_path / "updates" / "current"
    assert pointer.is_symlink()
    assert pointer.readlink().as_posix() == "versions/1"
    assert not (tmp_path / "updates" / "current.tmp").exists()
    assert Journal.from_json((tmp_path / "updates" / "journal.json").read_bytes()).state == "watching"


def _model_body(version: int, manifest: dict[str, Any], content: bytes) -> dict[str, Any]:
    return {
        "type": "model",
        "version": version,
        "watch_s": 5,
        "model": {
            "manifest": manifest,
            "content_b64": base64.b64encode(content).decode(),
            "sha256": hashlib.sha256(content).hexdigest(),
        },
    }


def test_model_updates_are_loaded_and_invoked_before_the_switch(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    manifest = yaml.safe_load((PACKAGED_MODELS / "irrigation_need.yaml").read_text())
    content = (PACKAGED_MODELS / "irrigation_need.tflite").read_bytes()
    manifest = {**manifest, "version": "1.0.1"}

    wrong = {**manifest, "inputs": [{**manifest["inputs"][0], "shape": [1, 12]}]}
    out = mgr.handle(_cmd("bad-tensors", _model_body(1, wrong, content)))
    assert out.outcome == "refused"
    assert "tensors do not match" in out.reason
    out = mgr.handle(_cmd("bad-file", _model_body(1, manifest, content[:-100])))
    assert out.outcome == "refused"
    body = _model_body(1, manifest, content)
    body["model"]["sha256"] = "0" * 64
    assert "hashes to" in mgr.handle(_cmd("bad-hash", body)).reason
    assert mgr.current == 0

    out = mgr.handle(_cmd("good", _model_body(1, manifest, content)))
    assert out.outcome == "accepted", out.reason
    cfg, _ = UpdateManager.resolve(path)
    assert cfg.inference is not None
    assert cfg.inference.models_dir is not None
    assert cfg.inference.models_dir == tmp_path / "updates" / "versions" / "1" / "models"
    assert yaml.safe_load((cfg.inference.models_dir / "irrigation_need.yaml").read_text())["version"] == "1.0.1"


# -- the health gate -----------------------------------------------------------------------------


class _View:
    """The gate's view of a site: the first read of each series is the snapshot at the switch, every
    later read is the site after it (deterministic, whatever the machine's load)."""

    def __init__(self, polls: tuple[float, float] = (0, 0), restarts: int = 0, up: Uplink | None = None) -> None:
        self.after_polls, self.after_restarts = {"m1": polls}, {"sync": (restarts, "ConnectionError: boom")}
        self.after_up = up if up is not None else Uplink(True, 50, 3)
        self.reads: dict[str, int] = {}

    def _first(self, name: str) -> bool:
        self.reads[name] = self.reads.get(name, 0) + 1
        return self.reads[name] == 1

    def polled_devices(self) -> list[str]:
        return ["m1"]

    def poll_counts(self) -> dict[str, tuple[float, float]]:
        return {"m1": (0, 0)} if self._first("polls") else dict(self.after_polls)

    def task_restarts(self) -> dict[str, tuple[int, str | None]]:
        return {"sync": (0, None)} if self._first("tasks") else dict(self.after_restarts)

    def uplink(self) -> Uplink | None:
        return Uplink(True, 0, 0) if self._first("up") else self.after_up


def _run(view: _View, policy: GatePolicy) -> Any:
    return asyncio.run(watch(view, policy))


def test_gate_passes_a_healthy_site_and_fails_early_on_a_dead_device() -> None:
    verdict = _run(_View(polls=(10, 1)), GatePolicy(watch_s=0.3, grace_s=0.1, step_s=0.02))
    assert verdict.healthy, verdict.reason

    t0 = time.monotonic()
    verdict = _run(_View(polls=(0, 5)), GatePolicy(watch_s=30, grace_s=0.1, step_s=0.02))
    assert not verdict.healthy
    assert "m1: 0 of 5" in verdict.reason
    assert verdict.first_failure_s is not None
    assert time.monotonic() - t0 < 10, "a dead device ends the watch early"


def test_gate_fails_on_restarts_silence_and_a_stuck_uplink() -> None:
    policy = GatePolicy(0.3, grace_s=0.1, step_s=0.02, uplink_grace_s=0.2)
    assert "task sync restarted" in _run(_View(polls=(10, 0), restarts=1), policy).reason
    assert "did not poll" in _run(_View(), policy).reason
    assert "not draining" in _run(_View(polls=(10, 0), up=Uplink(True, 0, 400)), policy).reason
    assert "not connected" in _run(_View(polls=(10, 0), up=Uplink(False, 0, 0)), policy).reason


def test_an_unusable_update_dir_is_one_line_and_exit_2(tmp_path: Path, capsys: Any) -> None:
    import pytest

    from agent.cli import main

    (tmp_path / "afile").write_text("x")
    path = _site(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["update"]["dir"] = str(tmp_path / "afile" / "updates")
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--config", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "update.dir: cannot use" in err[0]


def test_a_damaged_journal_keeps_the_version_floor(tmp_path: Path) -> None:
    path = _site(tmp_path)
    mgr = _manager(path)
    assert mgr.handle(_cmd("a", {"type": "release", "version": 7, "release": "r"})).outcome == "accepted"
    (tmp_path / "updates" / "journal.json").write_text("{not json")
    _cfg, mgr = UpdateManager.resolve(path)
    assert mgr is not None
    assert mgr.journal.highest == 7
    assert "not newer" in mgr.handle(_cmd("b", {"type": "release", "version": 6, "release": "r"})).reason
