"""Command routing: target, expiry, replay, dispatch, handler failures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kernel.clock import Clock
from kernel.commands import CommandOutcome, CommandRouter, IncomingCommand
from kernel.errors import SafetyViolation
from kernel.readings import ClockQuality


class _Lamp:
    def __init__(self) -> None:
        self.level: int | None = None

    def apply_command(self, body: dict[str, Any]) -> CommandOutcome:
        level = body.get("level")
        if not isinstance(level, int) or not 0 <= level <= 100:
            return CommandOutcome.refused(f"level {level!r} is not 0..100")
        if level == 66:
            raise SafetyViolation("test-rule", "66 is unsafe")
        if level == 13:
            raise RuntimeError("relay driver crashed")
        self.level = level
        return CommandOutcome.accepted()


def _cmd(cid: str = "c-1", target: str = "site-a", kind: str = "lighting", **kw: Any) -> IncomingCommand:
    now = time.time()
    return IncomingCommand(
        cid,
        target,
        kind,
        kw.pop("issued_at", now),
        kw.pop("expires_at", now + 60),
        kw.pop("body", {"level": 50}),
    )


def _router(tmp_path: Path, quality: ClockQuality = ClockQuality.SYNCED) -> tuple[CommandRouter, _Lamp]:
    router = CommandRouter("site-a", Clock(override=quality), tmp_path / "seen.db")
    lamp = _Lamp()
    router.register("lighting", lamp)
    return router, lamp


def test_accepted_command_is_applied(tmp_path: Path) -> None:
    router, lamp = _router(tmp_path)
    assert router.dispatch(_cmd()).outcome == "accepted"
    assert lamp.level == 50


def test_wrong_site_expired_future_and_unknown_kind_refused(tmp_path: Path) -> None:
    router, lamp = _router(tmp_path)
    now = time.time()
    assert "for site 'site-b'" in router.dispatch(_cmd(target="site-b")).reason
    assert "expired" in router.dispatch(_cmd("c-2", issued_at=now - 120, expires_at=now - 60)).reason
    assert "future" in router.dispatch(_cmd("c-3", issued_at=now + 3600, expires_at=now + 7200)).reason
    assert "no handler" in router.dispatch(_cmd("c-4", kind="traffic")).reason
    assert lamp.level is None


def test_replay_refused_even_after_restart(tmp_path: Path) -> None:
    router, _lamp = _router(tmp_path)
    assert router.dispatch(_cmd("c-9")).outcome == "accepted"
    router.close()
    router2, lamp2 = _router(tmp_path)
    out = router2.dispatch(_cmd("c-9", body={"level": 10}))
    assert out.outcome == "refused"
    assert "replay" in out.reason
    assert lamp2.level is None


def test_unsynced_clock_skips_wall_time_checks_but_not_replay(tmp_path: Path) -> None:
    router, _lamp = _router(tmp_path, ClockQuality.UNSYNCED)
    now = time.time()
    assert router.dispatch(_cmd("c-5", issued_at=now - 7200, expires_at=now - 3600)).outcome == "accepted"
    assert router.dispatch(_cmd("c-5")).outcome == "refused"


def test_handler_refusals_and_failures_become_outcomes(tmp_path: Path) -> None:
    router, lamp = _router(tmp_path)
    bad = router.dispatch(_cmd("c-6", body={"level": 300}))
    assert (bad.outcome, bad.reason) == ("refused", "level 300 is not 0..100")
    unsafe = router.dispatch(_cmd("c-7", body={"level": 66}))
    assert unsafe.outcome == "refused"
    assert "safety envelope: test-rule" in unsafe.reason
    crashed = router.dispatch(_cmd("c-8", body={"level": 13}))
    assert crashed.outcome == "failed"
    assert "relay driver crashed" in crashed.reason
    assert lamp.level is None
