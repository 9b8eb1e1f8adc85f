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
    late = router.dispatch(_cmd("c-5", issued_at=now - 7200, expires_at=now - 3600))
    assert late.outcome == "accepted"
    assert "expiry not checked" in late.reason  # said in the reply, never silently
    assert router.dispatch(_cmd("c-5")).outcome == "refused"


def test_async_handlers_are_answered_by_their_owner_thread(tmp_path: Path) -> None:
    import asyncio
    import concurrent.futures
    import threading

    router = CommandRouter("site-a", Clock(override=ClockQuality.SYNCED), tmp_path / "seen.db")
    owner_threads: list[str] = []

    def handed_over(body: dict[str, Any]) -> concurrent.futures.Future[CommandOutcome]:
        fut: concurrent.futures.Future[CommandOutcome] = concurrent.futures.Future()

        def owner() -> None:
            owner_threads.append(threading.current_thread().name)
            fut.set_result(CommandOutcome.accepted(f"level {body['level']}"))

        if body["level"] != 99:  # 99: the owner never answers
            threading.Thread(target=owner, name="owner").start()
        return fut

    router.register("lighting", lambda body: asyncio.wrap_future(handed_over(body)))

    async def main() -> tuple[CommandOutcome, CommandOutcome, CommandOutcome]:
        ok = await router.dispatch_async(_cmd("a-1", body={"level": 40}))
        hung = await router.dispatch_async(_cmd("a-2", body={"level": 99}), timeout_s=0.2)
        replay = await router.dispatch_async(_cmd("a-1", body={"level": 40}))
        return ok, hung, replay

    ok, hung, replay = asyncio.run(main())
    assert (ok.outcome, ok.reason) == ("accepted", "level 40")
    assert owner_threads == ["owner"]
    assert hung.outcome == "failed"
    assert "no answer" in hung.reason
    assert replay.outcome == "refused"
    # The synchronous entry point refuses to drop an asynchronous answer on the floor.
    assert router.dispatch(_cmd("a-3", body={"level": 1})).outcome == "failed"
    router.close()


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
