"""The versions folder on its own: staging, committing, the pointer switch, setting aside, pruning.

Real files in a temporary folder; a power cut cannot be pulled here, so what is checked is what each
step leaves on disk (whole versions, one pointer, no temporary names)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.update.versions import CONFIG_NAME, Versions
from kernel.errors import UpdateError


@pytest.fixture
def vs(tmp_path: Path) -> Versions:
    boot = tmp_path / "site.yaml"
    boot.write_text("version: 1\nsite: {id: bn-1}\n")
    return Versions(tmp_path / "updates", boot)


def committed(vs: Versions, version: int, doc: dict | None = None) -> Path:
    return vs.commit_stage(version, vs.staging(version), doc or {"v": version})


def test_a_new_versions_folder_has_its_parts_and_no_pointer(vs: Versions, tmp_path: Path) -> None:
    root = tmp_path / "updates"
    assert (root / "versions").is_dir()
    assert (root / "failed").is_dir()
    assert vs.pointer == root / "current"
    assert vs.journal_path == root / "journal.json"
    assert vs.path(4) == root / "versions" / "4"
    assert vs.current() == 0


def test_a_staging_folder_left_by_a_crash_is_removed_at_start(vs: Versions) -> None:
    left = vs.staging(3)
    (left / "half.bin").write_bytes(b"x")
    committed(vs, 2)
    again = Versions(vs.root, vs.bootstrap)
    assert not left.exists()
    assert again.exists(2)


def test_staging_starts_empty_even_over_an_old_attempt(vs: Versions) -> None:
    stage = vs.staging(5)
    (stage / "old.bin").write_bytes(b"x")
    stage = vs.staging(5)
    assert stage == vs.dir / "5.staging"
    assert stage.is_dir()
    assert list(stage.iterdir()) == []


def test_a_committed_stage_becomes_the_version_whole(vs: Versions) -> None:
    stage = vs.staging(1)
    (stage / "models").mkdir()
    (stage / "models" / "m.tflite").write_bytes(b"model")
    final = vs.commit_stage(1, stage, {"b": 2, "a": [1]})
    assert final == vs.path(1)
    assert not stage.exists()
    assert (final / "models" / "m.tflite").read_bytes() == b"model"
    assert (final / CONFIG_NAME).read_text() == json.dumps({"b": 2, "a": [1]}, indent=1, sort_keys=True)
    assert not (final / (CONFIG_NAME + ".tmp")).exists()
    assert vs.raw(1) == {"a": [1], "b": 2}
    assert vs.exists(1)


class DiskLog:
    """Records, in order, the real ``os.fsync`` calls (by the path of the synced file or folder) and
    ``os.replace`` renames, then makes them: what would be durable if the power were cut at a step."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        fsync, replace = os.fsync, os.replace

        def logged_fsync(fd: int) -> None:
            self.events.append(("fsync", str(Path(f"/proc/self/fd/{fd}").readlink())))
            fsync(fd)

        def logged_replace(src: str | Path, dst: str | Path) -> None:
            self.events.append(("replace", str(src)))
            replace(src, dst)

        monkeypatch.setattr(os, "fsync", logged_fsync)
        monkeypatch.setattr(os, "replace", logged_replace)

    def synced_before(self, renamed: Path) -> set[str]:
        """The paths fsynced before ``renamed`` was renamed."""
        end = self.events.index(("replace", str(renamed)))
        return {path for what, path in self.events[:end] if what == "fsync"}


def test_every_staged_file_and_folder_is_durable_before_the_version_is_published(
    vs: Versions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut just after the rename that publishes ``versions/<n>`` must not leave a version
    whose model is empty or missing: every file and folder of the stage is fsynced before it."""
    stage = vs.staging(1)
    (stage / "models" / "extra").mkdir(parents=True)
    (stage / "models" / "m.tflite").write_bytes(b"model")
    (stage / "models" / "extra" / "labels.txt").write_text("car\n")
    log = DiskLog(monkeypatch)
    final = vs.commit_stage(1, stage, {"v": 1})
    staged = {str(stage / p.relative_to(final)) for p in final.rglob("*")} | {str(stage)}
    assert len(staged) == 6  # site.json, models/, m.tflite, extra/, labels.txt and the stage itself
    assert staged <= log.synced_before(stage)
    assert ("fsync", str(vs.dir)) in log.events[log.events.index(("replace", str(stage))) :], (
        "the rename itself is made durable"
    )


def test_committing_a_version_again_replaces_the_attempt_that_never_ran(vs: Versions) -> None:
    first = committed(vs, 2, {"try": 1})
    (first / "stray.bin").write_bytes(b"x")
    committed(vs, 2, {"try": 2})
    assert vs.raw(2) == {"try": 2}
    assert not (vs.path(2) / "stray.bin").exists()


def test_version_zero_is_the_bootstrap_file(vs: Versions) -> None:
    assert vs.exists(0)
    assert vs.raw(0) == {"version": 1, "site": {"id": "bn-1"}}


def test_a_version_without_its_config_does_not_exist(vs: Versions) -> None:
    vs.path(6).mkdir()
    assert not vs.exists(6)
    with pytest.raises(UpdateError, match=r"^version 6 cannot be read: "):
        vs.raw(6)


def test_a_damaged_config_cannot_be_read(vs: Versions) -> None:
    final = committed(vs, 1)
    (final / CONFIG_NAME).write_text("{not json")
    with pytest.raises(UpdateError, match=r"^version 1 cannot be read: "):
        vs.raw(1)
    (final / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(UpdateError, match=r"^version 1 is not a config mapping$"):
        vs.raw(1)
    vs.bootstrap.write_text("- a list\n")
    with pytest.raises(UpdateError, match=r"^version 0 is not a config mapping$"):
        vs.raw(0)


def test_the_switch_points_current_at_the_version_by_a_relative_link(vs: Versions) -> None:
    committed(vs, 1)
    committed(vs, 2)
    vs.switch(1)
    assert vs.pointer.readlink() == Path("versions") / "1"
    assert vs.current() == 1
    (vs.root / "current.tmp").symlink_to("versions/9")  # left by a crash mid-switch
    vs.switch(2)
    assert vs.current() == 2
    assert not os.path.lexists(vs.root / "current.tmp")


def test_switching_to_version_zero_removes_the_pointer(vs: Versions) -> None:
    committed(vs, 1)
    vs.switch(1)
    vs.switch(0)
    assert not os.path.lexists(vs.pointer)
    assert vs.current() == 0
    vs.switch(0)  # nothing to remove: still fine
    assert vs.current() == 0


def test_a_dangling_or_foreign_pointer_selects_the_bootstrap(vs: Versions) -> None:
    vs.pointer.symlink_to("versions/7")
    assert vs.current() == 0  # no such version
    vs.pointer.unlink()
    vs.pointer.symlink_to("versions/7a")
    assert vs.current() == 0
    vs.pointer.unlink()
    vs.pointer.write_text("7")  # not a link
    assert vs.current() == 0


def test_a_failed_version_is_set_aside_for_the_operator(vs: Versions) -> None:
    committed(vs, 3, {"try": 1})
    dest = vs.set_aside(3)
    assert dest == vs.failed_dir / "3"
    assert json.loads((dest / CONFIG_NAME).read_text()) == {"try": 1}
    assert not vs.exists(3)
    committed(vs, 3, {"try": 2})
    assert vs.set_aside(3) == dest
    assert json.loads((dest / CONFIG_NAME).read_text()) == {"try": 2}


def test_nothing_to_set_aside_for_the_bootstrap_or_a_missing_version(vs: Versions) -> None:
    assert vs.set_aside(0) is None
    assert vs.set_aside(8) is None
    assert list(vs.failed_dir.iterdir()) == []


def test_pruning_keeps_the_newest_and_the_ones_asked_for(vs: Versions) -> None:
    for v in range(1, 9):
        committed(vs, v)
    vs.staging(9)
    vs.prune(keep={2}, max_kept=3)
    assert sorted(p.name for p in vs.dir.iterdir()) == ["2", "6", "7", "8", "9.staging"]


def test_pruning_keeps_five_by_default(vs: Versions) -> None:
    for v in range(1, 8):
        committed(vs, v)
    vs.prune(keep=set())
    assert sorted(int(p.name) for p in vs.dir.iterdir()) == [3, 4, 5, 6, 7]


def test_pruning_never_fails_on_an_entry_it_cannot_remove(vs: Versions) -> None:
    (vs.dir / "1").write_text("not a version folder")
    for v in range(2, 5):
        committed(vs, v)
    vs.prune(keep=set(), max_kept=2)
    assert sorted(p.name for p in vs.dir.iterdir()) == ["1", "3", "4"]


def test_the_versions_folder_may_be_deep_in_a_fresh_disk(tmp_path: Path) -> None:
    vs = Versions(tmp_path / "data" / "kbe" / "updates", tmp_path / "site.yaml")
    assert vs.dir.is_dir()
    assert vs.failed_dir.is_dir()


def test_a_leftover_staging_entry_that_is_not_a_folder_does_not_stop_the_start(vs: Versions) -> None:
    (vs.dir / "4.staging").write_text("a torn file")
    Versions(vs.root, vs.bootstrap)
