"""Command routing: target, expiry, replay, dispatch, handler failures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

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


class _FixedClock(Clock):
    """The wall clock stopped at ``at`` (the expiry boundaries are checked to the second)."""

    def __init__(self, at: float, quality: ClockQuality = ClockQuality.SYNCED) -> None:
        super().__init__(override=quality)
        self.at = at

    def now(self) -> float:
        return self.at


def _at(t: float, quality: ClockQuality = ClockQuality.SYNCED, **kw: Any) -> CommandRouter:
    router = CommandRouter("site-a", _FixedClock(t, quality), **kw)
    router.register("lighting", _Lamp())
    return router


def _timed(cid: str, issued_at: float, expires_at: float) -> IncomingCommand:
    return IncomingCommand(cid, "site-a", "lighting", issued_at, expires_at, {"level": 5})


def test_refusals_say_why_in_the_reply(tmp_path: Path) -> None:
    """The reason goes back to the centre's operator in the command reply: it names what was wrong."""
    router = _at(1000.0, seen_path=tmp_path / "seen.db")
    router.register("traffic", lambda body: CommandOutcome.accepted())
    assert router.dispatch(_cmd(target="site-b")) == CommandOutcome(
        "refused", "command is for site 'site-b', this is 'site-a'"
    )
    assert router.dispatch(_cmd(kind="water")) == CommandOutcome(
        "refused", "no handler for command kind 'water' (have: lighting, traffic)"
    )
    assert router.dispatch(_timed("e-1", 900.0, 958.0)) == CommandOutcome(
        "refused", "command expired 42 s ago"
    )
    assert router.dispatch(_timed("f-1", 1400.0, 1500.0)) == CommandOutcome(
        "refused", "command issued in the future; check the centre's clock"
    )
    assert router.dispatch(_timed("i-1", 990.0, 990.0 - 1)) == CommandOutcome(
        "refused", "command expired 11 s ago"
    )
    assert router.dispatch(_timed("i-2", 1000.0, 999.5 + 60)) == CommandOutcome("accepted")
    assert router.dispatch(_timed("i-2", 1000.0, 1060.0)) == CommandOutcome(
        "refused", "command i-2 was already handled (replay)"
    )
    router.close()


def test_expiry_and_future_limits_are_exact(tmp_path: Path) -> None:
    router = _at(1000.0)
    assert router.dispatch(_timed("x-1", 900.0, 1000.0)).reason == "command expired 0 s ago"
    assert router.dispatch(_timed("x-2", 900.0, 1000.5)).outcome == "accepted"
    assert router.dispatch(_timed("x-3", 1300.0, 1400.0)).outcome == "accepted", "300 s ahead is allowed"
    assert "future" in router.dispatch(_timed("x-4", 1300.5, 1400.0)).reason
    narrow = _at(1000.0, max_future_s=10.0)
    assert narrow.dispatch(_timed("y-1", 1010.0, 1100.0)).outcome == "accepted"
    assert "future" in narrow.dispatch(_timed("y-2", 1010.5, 1100.0)).reason
    # Refused commands are not remembered: a corrected resend of the same id is not a replay.
    assert narrow.dispatch(_timed("y-2", 1005.0, 1100.0)).outcome == "accepted"


def test_an_rtc_clock_is_checked_like_a_synced_one() -> None:
    router = _at(1000.0, ClockQuality.RTC)
    assert router.dispatch(_timed("r-1", 900.0, 950.0)).reason == "command expired 50 s ago"
    assert router.dispatch(_timed("r-2", 1000.0, 1010.0)) == CommandOutcome("accepted")


def test_an_unsynced_clock_still_refuses_a_command_that_expires_before_it_is_issued() -> None:
    router = _at(1000.0, ClockQuality.UNSYNCED)
    for cid, expires in (("u-1", 500.0), ("u-2", 499.0)):
        assert router.dispatch(_timed(cid, 500.0, expires)) == CommandOutcome(
            "refused", "expires_at is not after issued_at"
        )
    # A handler's own reason comes first, then the note that time was not checked.
    router.register("note", lambda body: CommandOutcome.accepted("dimmed to 5"))
    out = router.dispatch(IncomingCommand("u-3", "site-a", "note", 5.0, 6.0, {}))
    assert out == CommandOutcome("accepted", "dimmed to 5; site clock unsynchronised: expiry not checked")
    refused = router.dispatch(IncomingCommand("u-4", "site-a", "water", 5.0, 6.0, {}))
    assert "expiry not checked" not in refused.reason


def test_a_plain_function_can_handle_a_kind_and_register_incoming_sees_the_whole_command() -> None:
    router = _at(1000.0)
    bodies: list[dict[str, Any]] = []
    seen: list[IncomingCommand] = []
    router.register("plain", lambda body: bodies.append(body) or CommandOutcome.accepted())
    router.register_incoming("whole", lambda cmd: seen.append(cmd) or CommandOutcome.accepted(cmd.command_id))
    assert router.kinds == ["lighting", "plain", "whole"]
    assert (
        router.dispatch(IncomingCommand("p-1", "site-a", "plain", 999.0, 1001.0, {"a": 1})).outcome
        == "accepted"
    )
    cmd = IncomingCommand("w-1", "site-a", "whole", 999.0, 1001.0, {"b": 2})
    assert router.dispatch(cmd) == CommandOutcome("accepted", "w-1")
    assert bodies == [{"a": 1}]
    assert seen == [cmd]


def test_handler_errors_become_outcomes_with_their_reason() -> None:
    from kernel.errors import ConfigError

    router = _at(1000.0)

    def boom(body: dict[str, Any]) -> CommandOutcome:
        raise {"cfg": ConfigError("site.yaml", ["lights.dim: above 100"]), "bug": KeyError("level")}[
            body["k"]
        ]

    router.register("x", boom)
    cfg = router.dispatch(IncomingCommand("h-1", "site-a", "x", 999.0, 1001.0, {"k": "cfg"}))
    assert cfg.outcome == "failed"
    assert cfg.reason == str(ConfigError("site.yaml", ["lights.dim: above 100"]))
    assert router.dispatch(
        IncomingCommand("h-2", "site-a", "x", 999.0, 1001.0, {"k": "bug"})
    ) == CommandOutcome("failed", "KeyError: 'level'")
    unsafe = router.dispatch(IncomingCommand("h-3", "site-a", "lighting", 999.0, 1001.0, {"level": 66}))
    assert unsafe == CommandOutcome("refused", "safety envelope: test-rule: 66 is unsafe")


def test_the_synchronous_entry_point_closes_an_asynchronous_answer() -> None:
    import asyncio
    import gc
    import warnings

    router = _at(1000.0)

    async def later(body: dict[str, Any]) -> CommandOutcome:
        return CommandOutcome.accepted()

    router.register("async", later)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = router.dispatch(IncomingCommand("a-1", "site-a", "async", 999.0, 1001.0, {}))
        gc.collect()
    assert out == CommandOutcome("failed", "the async handler answers asynchronously")
    assert not [w for w in caught if "never awaited" in str(w.message)]
    loop = asyncio.new_event_loop()
    try:
        router.register("future", lambda body: loop.create_future())
        fut = router.dispatch(IncomingCommand("a-2", "site-a", "future", 999.0, 1001.0, {}))
    finally:
        loop.close()
    assert fut == CommandOutcome("failed", "the future handler answers asynchronously")


async def test_the_asynchronous_entry_point_checks_times_out_and_catches() -> None:
    router = _at(1000.0, ClockQuality.UNSYNCED)

    async def hangs(body: dict[str, Any]) -> CommandOutcome:
        import asyncio

        await asyncio.sleep(60)
        return CommandOutcome.accepted()

    def breaks(body: dict[str, Any]) -> CommandOutcome:
        if body.get("bug"):
            raise ZeroDivisionError("division by zero")
        raise SafetyViolation("rule", "no")

    router.register("hang", hangs)
    router.register("break", breaks)
    now_ok = await router.dispatch_async(_timed("s-1", 1.0, 2.0))
    assert now_ok == CommandOutcome("accepted", "site clock unsynchronised: expiry not checked")
    assert await router.dispatch_async(_timed("s-1", 1.0, 2.0)) == CommandOutcome(
        "refused", "command s-1 was already handled (replay)"
    )
    hung = await router.dispatch_async(IncomingCommand("s-2", "site-a", "hang", 1.0, 2.0, {}), timeout_s=0.25)
    assert hung == CommandOutcome("failed", "no answer from the hang loop in 0.25 s")
    broke = await router.dispatch_async(IncomingCommand("s-3", "site-a", "break", 1.0, 2.0, {}))
    assert broke == CommandOutcome("refused", "safety envelope: rule: no")
    bug = await router.dispatch_async(IncomingCommand("s-4", "site-a", "break", 1.0, 2.0, {"bug": 1}))
    assert bug == CommandOutcome("failed", "ZeroDivisionError: division by zero")


def test_the_replay_guard_forgets_only_what_expired_more_than_a_day_ago(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "seen.db"
    t = 1_790_000_000.0
    clock = _FixedClock(t)
    router = CommandRouter("site-a", clock, path)
    router.register("lighting", _Lamp())
    for cid, expires in (("old", t + 10), ("edge", t + 11), ("recent", t + 100_000)):
        assert router.dispatch(_timed(cid, t, expires)).outcome == "accepted"
    clock.at = t + 11 + 86400
    # The next command purges the ids that expired over a day ago (the expiry check refuses them anyway),
    # from whichever thread it comes.
    results: list[CommandOutcome] = []
    worker = threading.Thread(
        target=lambda: results.append(router.dispatch(_timed("n-1", clock.at, clock.at + 60)))
    )
    worker.start()
    worker.join()
    assert results == [CommandOutcome("accepted")]
    router.close()
    # Reopened with the expiry check off, only the replay guard answers.
    again = CommandRouter("site-a", _FixedClock(t, ClockQuality.UNSYNCED), path)
    again.register("lighting", _Lamp())
    assert again.dispatch(_timed("old", t, t + 10)).outcome == "accepted"
    for cid in ("edge", "recent", "n-1"):
        assert again.dispatch(_timed(cid, t, t + 10)).reason == f"command {cid} was already handled (replay)"
    again.close()
    in_memory = CommandRouter("site-a", Clock(override=ClockQuality.SYNCED))
    in_memory.register("lighting", _Lamp())
    now = time.time()
    assert in_memory.dispatch(_timed("m-1", now, now + 60)).outcome == "accepted"
    assert in_memory.dispatch(_timed("m-1", now, now + 60)).outcome == "refused"
    in_memory.close()
    assert not (tmp_path / ":memory:").exists()


def test_an_unsynced_clock_days_ahead_still_refuses_a_replay(tmp_path: Path) -> None:
    """Mutation testing found it: the guard forgot ids by the wall clock even when that clock was
    unsynchronised, so on a site clock days ahead of the centre's a command was forgotten as it was
    recorded, and the same signed command was accepted again."""
    router = CommandRouter("site-a", Clock(override=ClockQuality.UNSYNCED), tmp_path / "seen.db")
    router.register("lighting", _Lamp())
    centre_now = time.time() - 30 * 86400  # the site's clock runs 30 days ahead of the centre's
    assert router.dispatch(_timed("c-1", centre_now, centre_now + 60)).outcome == "accepted"
    assert router.dispatch(_timed("c-2", centre_now, centre_now + 60)).outcome == "accepted"
    assert "replay" in router.dispatch(_timed("c-1", centre_now, centre_now + 60)).reason
    router.close()


def test_the_replay_memory_lives_at_its_path_and_without_one_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()
    now = time.time()
    persisted = CommandRouter("site-a", Clock(override=ClockQuality.SYNCED), tmp_path / "state" / "seen.db")
    persisted.register("lighting", _Lamp())
    assert persisted.dispatch(_timed("p-1", now, now + 60)).outcome == "accepted"
    persisted.close()
    assert sorted(p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".db") == ["seen.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    for _ in range(2):
        memory = CommandRouter("site-a", Clock(override=ClockQuality.SYNCED))
        memory.register("lighting", _Lamp())
        assert memory.dispatch(_timed("m-1", now, now + 60)).outcome == "accepted", "nothing kept between runs"
        memory.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
