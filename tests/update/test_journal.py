"""The update journal on its own: its file format, damage, and the atomic replace it is written by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.update.journal import Journal, Outcome, Pending, load_journal, save_journal, write_atomic
from kernel.errors import UpdateError


def full() -> Journal:
    return Journal(
        state="watching",
        highest=7,
        release="r7",
        pending=Pending("c1", 7, "release", 6, 30.0, min_success=0.9, release="r7", boots=1),
        last=Outcome("c0", 6, "committed", "healthy", 1.7e9, reported=True),
        failed=[4, 5],
    )


def test_a_fresh_journal_is_idle_with_nothing_pending() -> None:
    j = Journal()
    assert (j.state, j.highest, j.release, j.pending, j.last, j.failed) == ("idle", 0, None, None, None, [])
    assert Journal().failed is not j.failed


def test_a_journal_survives_its_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    save_journal(path, full())
    assert load_journal(path) == full()
    assert path.read_bytes() == json.dumps(json.loads(path.read_bytes()), indent=1, sort_keys=True).encode()


def test_no_file_is_a_fresh_journal(tmp_path: Path) -> None:
    assert load_journal(tmp_path / "journal.json") == Journal()


def test_optional_fields_may_be_missing_from_the_file() -> None:
    j = Journal.from_json(b'{"state": "idle", "highest": "3"}')
    assert j == Journal(highest=3)
    assert Journal.from_json(b'{"state": "idle", "highest": 2, "failed": ["4"]}').failed == [4]


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b'{"highest": 1}',
        b'{"state": "idle"}',
        b'{"state": "idle", "highest": "x"}',
        b'{"state": "idle", "highest": 1, "pending": {"bogus": 1}}',
        b'{"state": "idle", "highest": 1, "last": [1]}',
    ],
)
def test_a_damaged_journal_is_one_update_error(data: bytes) -> None:
    with pytest.raises(UpdateError, match=r"^update journal is damaged: "):
        Journal.from_json(data)


def test_the_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
