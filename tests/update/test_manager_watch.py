"""The manager's watch after a switch: commit or roll back, then report the outcome once.

The host here is scripted (the real one is the whole running agent, exercised with a broker by
tests/update/test_agent_updates.py, too slow for mutation runs): it answers the gate's questions and
records the event, the reply and the restart the manager asks for. The versions folder and the
journal are real files.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from agent.update.gate import Uplink
from agent.update.journal import load_journal
from agent.update.manager import UpdateManager
from tests.update.test_update_units import _cmd, _manager, _site


class Host:
    """A scripted agent: one polled device, supervised tasks, an uplink that may come up late."""

    def __init__(
        self, polls: tuple[float, float] = (10, 0), restarts: int = 0, offline_checks: int = 0
    ) -> None:
        self.polls = polls
        self.restarts = restarts
        self.offline_checks = offline_checks
        self.failed_sends = 0
        self.calls = 0
        self.events: list[tuple[str, str, dict[str, str]]] = []
        self.replies: list[tuple[str, str, str, str, int]] = []
        self.restart_requested = 0

    def polled_devices(self) -> list[str]:
        return ["m1"]

    def poll_counts(self) -> dict[str, tuple[float, float]]:
        self.calls += 1
        return {"m1": (0.0, 0.0)} if self.calls == 1 else {"m1": self.polls}

    def task_restarts(self) -> dict[str, tuple[int, str | None]]:
        return {"sync": (0, None)} if self.calls <= 1 else {"sync": (self.restarts, "boom")}

    def uplink(self) -> Uplink | None:
        return None

    def uplink_connected(self) -> bool:
        if self.offline_checks > 0:
            self.offline_checks -= 1
            return False
        return True

    def send_reply(self, command_id: str, outcome: str, reason: str, phase: str, version: int) -> bool:
        if self.failed_sends > 0:
            self.failed_sends -= 1
            return False
        self.replies.append((command_id, outcome, reason, phase, version))
        return True

    async def emit_event(self, point: str, value: str, meta: dict[str, str]) -> None:
        self.events.append((point, value, meta))

    def request_restart(self) -> None:
        self.restart_requested += 1


def switched(tmp_path: Path, body: dict[str, Any] | None = None, **update: Any) -> UpdateManager:
    """A site switched to release version 1 (from version 0), its watch shortened to 0.2 s."""
    mgr = _manager(_site(tmp_path, **update))
    cmd = {"type": "release", "version": 1, "release": "r1", "watch_s": 5, **(body or {})}
    assert mgr.handle(_cmd("a", cmd)).outcome == "accepted"
    mgr = _manager(tmp_path / "site.yaml")  # the restart onto version 1
    assert mgr.journal.pending is not None
    mgr.journal.pending.watch_s = 0.2
    return mgr


def test_a_healthy_watch_commits_prunes_and_reports_once(tmp_path: Path) -> None:
    mgr = switched(tmp_path, keep_versions=2)
    host = Host()
    asyncio.run(mgr.run(host))
    j = load_journal(mgr.versions.journal_path)
    assert (j.state, j.pending, j.release) == ("idle", None, "r1")
    assert j.last is not None
    assert (j.last.command_id, j.last.version, j.last.outcome) == ("a", 1, "committed")
    assert j.last.reason.startswith("committed version 1: healthy for ")
    assert j.last.reported
    assert mgr.current == 1
    assert mgr.last_verdict is not None
    assert mgr.last_verdict.healthy
    meta = {"version": "1", "command_id": "a", "reason": j.last.reason}
    assert host.events == [("update", "committed", meta)]
    assert host.replies == [("a", "accepted", j.last.reason, "committed", 1)]
    assert host.restart_requested == 0
    asyncio.run(_manager(tmp_path / "site.yaml").run(Host()))  # reported already: not again
    assert load_journal(mgr.versions.journal_path).last == j.last


def test_a_commit_prunes_beyond_the_versions_kept(tmp_path: Path) -> None:
    path = _site(tmp_path, keep_versions=2)
    mgr = _manager(path)
    for v in (1, 2, 3):
        assert (
            mgr.handle(_cmd(f"c{v}", {"type": "release", "version": v, "release": f"r{v}"})).outcome
            == "accepted"
        )
        mgr = _manager(path)
        assert mgr.journal.pending is not None
        mgr.journal.pending.watch_s = 0.1
        asyncio.run(mgr.run(Host()))
    assert sorted(p.name for p in mgr.versions.dir.iterdir()) == ["2", "3"]


def test_an_unhealthy_watch_rolls_back_and_asks_for_a_restart(tmp_path: Path) -> None:
    mgr = switched(tmp_path)
    host = Host(restarts=1)
    asyncio.run(mgr.run(host))
    j = load_journal(mgr.versions.journal_path)
    assert mgr.current == 0
    assert (j.state, j.pending, j.release) == ("idle", None, None)
    assert j.last is not None
    assert j.last.outcome == "rolled_back"
    expected = r"rolled back to version 0: task sync restarted \(boom\) \(first failure \d\.\d s, unhealthy \d\.\d s into the watch\)"
    assert re.fullmatch(expected, j.last.reason), j.last.reason
    assert not j.last.reported
    assert j.failed == [1]
    assert (mgr.versions.failed_dir / "1").is_dir()
    assert host.restart_requested == 1
    assert host.replies == []  # reported by the agent that starts next, on the old version
    host = Host()
    asyncio.run(_manager(tmp_path / "site.yaml").run(host))
    assert host.replies == [("a", "failed", j.last.reason, "rolled-back", 1)]
    assert [e[1] for e in host.events] == ["rolled_back"]


def test_the_update_may_lower_the_success_rate_the_watch_needs(tmp_path: Path) -> None:
    mgr = switched(tmp_path, {"min_success": 0.4})
    asyncio.run(mgr.run(Host(polls=(5, 5))))
    assert mgr.journal.last is not None
    assert mgr.journal.last.outcome == "committed"


def test_the_site_success_rate_applies_when_the_update_names_none(tmp_path: Path) -> None:
    mgr = switched(tmp_path, min_success=0.6)
    asyncio.run(mgr.run(Host(polls=(5, 5))))
    assert mgr.journal.last is not None
    assert mgr.journal.last.outcome == "rolled_back"
    assert "5 of 10 polls succeeded (needs 60%)" in mgr.journal.last.reason


def test_the_report_waits_for_the_uplink_and_retries_a_failed_send(tmp_path: Path) -> None:
    mgr = switched(tmp_path)
    host = Host(offline_checks=1)
    host.failed_sends = 1
    asyncio.run(mgr.run(host))
    assert len(host.replies) == 1
    assert host.offline_checks == 0
    assert host.failed_sends == 0
    assert load_journal(mgr.versions.journal_path).last.reported  # type: ignore[union-attr]


def test_nothing_to_watch_or_report_on_a_fresh_site(tmp_path: Path) -> None:
    mgr = _manager(_site(tmp_path))
    host = Host()
    asyncio.run(mgr.run(host))
    assert host.events == []
    assert host.replies == []
    assert mgr.last_verdict is None
    assert mgr.status() == {"config_version": 0, "update_state": "idle", "release": None}


def test_status_names_the_version_the_state_and_the_release(tmp_path: Path) -> None:
    mgr = switched(tmp_path)
    assert mgr.status() == {"config_version": 1, "update_state": "watching", "release": None}
    asyncio.run(mgr.run(Host()))
    assert mgr.status() == {"config_version": 1, "update_state": "idle", "release": "r1"}


@pytest.mark.parametrize("boots", [1, 2])
def test_a_rollback_keeps_the_last_ten_failed_versions(tmp_path: Path, boots: int) -> None:
    mgr = switched(tmp_path)
    mgr.journal.failed = list(range(100, 100 + 9 + boots))
    asyncio.run(mgr.run(Host(restarts=1)))
    assert mgr.journal.failed == [*list(range(100, 100 + 9 + boots))[-9:], 1]


def test_a_rollback_cut_short_by_a_crash_is_finished_at_the_next_start(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The journal says "rolling_back" before the pointer moves back: a power cut between the two
    (here the switch fails) leaves a journal the next start finishes from."""
    mgr = switched(tmp_path)

    def cut(version: int) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(mgr.versions, "switch", cut)
    with pytest.raises(OSError, match="power cut"):
        asyncio.run(mgr.run(Host(restarts=1)))
    j = load_journal(mgr.versions.journal_path)
    assert j.state == "rolling_back"
    assert j.last is not None
    assert j.last.outcome == "rolled_back"
    assert abs(j.last.ts - time.time()) < 60
    monkeypatch.undo()
    mgr = _manager(tmp_path / "site.yaml")
    assert mgr.current == 0
    assert mgr.journal.state == "idle"
    assert mgr.journal.failed == [1]


def test_a_dead_device_counts_after_half_a_short_watch(tmp_path: Path) -> None:
    """The site's 5 s grace is cut to half of a 3 s watch: a device failing every poll ends the watch
    at 1.5 s (the gate looks every 0.5 s), not sooner and not only at its end."""
    mgr = switched(tmp_path)
    assert mgr.journal.pending is not None
    mgr.journal.pending.watch_s = 3.0
    asyncio.run(mgr.run(Host(polls=(0, 5))))
    assert mgr.last_verdict is not None
    assert not mgr.last_verdict.healthy
    assert 1.5 <= mgr.last_verdict.elapsed_s < 2.5, mgr.last_verdict


def test_a_device_that_never_polled_names_no_first_failure(tmp_path: Path) -> None:
    mgr = switched(tmp_path)
    asyncio.run(mgr.run(Host(polls=(0, 0))))
    assert mgr.journal.last is not None
    expected = r"rolled back to version 0: device m1 did not poll during the watch \(unhealthy \d\.\d s into the watch\)"
    assert re.fullmatch(expected, mgr.journal.last.reason), mgr.journal.last.reason


def test_a_commit_is_stamped_with_the_time(tmp_path: Path) -> None:
    mgr = switched(tmp_path)
    asyncio.run(mgr.run(Host()))
    assert mgr.journal.last is not None
    assert abs(mgr.journal.last.ts - time.time()) < 60


def test_an_update_arriving_while_the_agent_runs_asks_it_to_restart(tmp_path: Path) -> None:
    mgr = _manager(_site(tmp_path))
    host = Host()
    asyncio.run(mgr.run(host))
    assert mgr.handle(_cmd("a", {"type": "release", "version": 1, "release": "r1"})).outcome == "accepted"
    assert host.restart_requested == 1


class SlowUplink(Host):
    """An uplink that comes up ``after_s`` seconds (monotonic) after the first check."""

    def __init__(self, after_s: float) -> None:
        super().__init__()
        self.after_s = after_s
        self.first: float | None = None
        self.checks = 0

    def uplink_connected(self) -> bool:
        now = time.monotonic()
        self.first = now if self.first is None else self.first
        self.checks += 1
        return now - self.first >= self.after_s


def test_the_report_retries_five_times_a_second_while_the_uplink_is_down(tmp_path: Path) -> None:
    """The reply is retried every 0.2 s: soon after the uplink comes up, without spinning meanwhile."""
    mgr = switched(tmp_path)
    asyncio.run(mgr.run(Host()))  # commits; the report goes out at once
    mgr.journal.last.reported = False  # type: ignore[union-attr]
    host = SlowUplink(0.5)
    t0 = time.monotonic()
    asyncio.run(mgr._report(host))
    took = time.monotonic() - t0
    assert len(host.replies) == 1
    assert 4 <= host.checks <= 6, host.checks  # checks at 0, 0.2, 0.4, 0.6 s (more only if the loop lags)
    assert 0.5 <= took < 1.1, took


def test_a_reported_outcome_is_not_sent_again_at_the_next_start(tmp_path: Path) -> None:
    mgr = switched(tmp_path)
    asyncio.run(mgr.run(Host()))
    mgr = _manager(tmp_path / "site.yaml")
    host = Host()
    asyncio.run(mgr.run(host))
    assert (host.events, host.replies) == ([], [])


def test_a_rollback_is_reported_as_failed_at_the_next_start(tmp_path: Path) -> None:
    mgr = switched(tmp_path)
    host = Host(restarts=1)
    asyncio.run(mgr.run(host))
    assert host.restart_requested == 1
    assert host.replies == [], "the report waits for the restart onto the old version"
    mgr = _manager(tmp_path / "site.yaml")
    host = Host()
    asyncio.run(mgr.run(host))
    j = load_journal(mgr.versions.journal_path)
    assert j.last is not None
    assert j.last.reported
    meta = {"version": "1", "command_id": "a", "reason": j.last.reason}
    assert host.events == [("update", "rolled_back", meta)]
    assert host.replies == [("a", "failed", j.last.reason, "rolled-back", 1)]
