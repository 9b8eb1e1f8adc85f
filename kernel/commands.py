"""Commands from the centre: checked (target, expiry, replay) and dispatched to the control loops.

The uplink verifies a command's Ed25519 signature before it gets here. The router then refuses a
command for another site, an expired one, one issued too far in the future, and any command id it
has already seen (replay), and hands the rest to the handler registered for its kind. Handlers
(lighting, traffic, configuration) return a :class:`CommandOutcome`; the safety envelope inside
them refuses what is unsafe.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from kernel.clock import Clock
from kernel.errors import AgentError, SafetyViolation
from kernel.readings import ClockQuality

log = logging.getLogger("kbe.commands")

Outcome = Literal["accepted", "refused", "failed"]


@dataclass(frozen=True)
class CommandOutcome:
    """What happened to a command."""

    outcome: Outcome
    reason: str = ""

    @classmethod
    def accepted(cls, reason: str = "") -> CommandOutcome:
        """The command was applied."""
        return cls("accepted", reason)

    @classmethod
    def refused(cls, reason: str) -> CommandOutcome:
        """The command was checked and not applied (invalid, unsafe, expired)."""
        return cls("refused", reason)


Answer = CommandOutcome | Awaitable[CommandOutcome]
"""A handler answers at once, or with an awaitable when the command is handed to its owner's thread or task."""


@runtime_checkable
class CommandHandler(Protocol):
    """A control loop that takes commands of one or more kinds."""

    def apply_command(self, body: dict[str, Any]) -> Answer:
        """Validate and apply one command body (or hand it to the loop's owner); never raise for a bad
        command, refuse it."""
        ...


@dataclass(frozen=True)
class IncomingCommand:
    """The parts of a verified command envelope the router needs."""

    command_id: str
    target: str
    kind: str
    issued_at: float
    expires_at: float
    body: dict[str, Any]


class _SeenIds:
    """Command ids already handled, persisted so a restart does not reopen the replay window."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (command_id TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
        )

    def add(self, command_id: str, expires_at: float, forget_before: float | None) -> bool:
        """Record an id; False if it was already there. Ids that expired before ``forget_before``
        are dropped (None: keep every id)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO seen (command_id, expires_at) VALUES (?, ?)", (command_id, expires_at)
                )
            except sqlite3.IntegrityError:
                return False
            if forget_before is not None:
                self._db.execute("DELETE FROM seen WHERE expires_at < ?", (forget_before,))
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CommandRouter:
    """Routes verified commands to handlers by kind, with target, expiry and replay checks."""

    def __init__(
        self,
        site_id: str,
        clock: Clock | None = None,
        seen_path: Path | None = None,
        max_future_s: float = 300.0,
    ) -> None:
        self.site_id = site_id
        self.clock = clock or Clock()
        self.max_future_s = max_future_s
        self._handlers: dict[str, Callable[[IncomingCommand], Answer]] = {}
        self._seen = _SeenIds(seen_path)

    def register(
        self, kind: str, handler: CommandHandler | Callable[[dict[str, Any]], Answer]
    ) -> None:
        """Route commands of ``kind`` to ``handler``; one that also has ``apply_incoming`` gets the
        whole command there (its id and times: what a handler keeps across restarts needs them)."""
        incoming = getattr(handler, "apply_incoming", None)
        if callable(incoming):
            self._handlers[kind] = incoming
            return
        fn = handler.apply_command if isinstance(handler, CommandHandler) else handler
        self._handlers[kind] = lambda cmd: fn(cmd.body)

    def register_incoming(self, kind: str, handler: Callable[[IncomingCommand], Answer]) -> None:
        """Route commands of ``kind`` to ``handler``, which gets the whole command (id, times, body)."""
        self._handlers[kind] = handler

    @property
    def kinds(self) -> list[str]:
        """Command kinds with a handler."""
        return sorted(self._handlers)

    def _check(self, cmd: IncomingCommand) -> CommandOutcome | Callable[[IncomingCommand], Answer]:
        """The handler for ``cmd``, or the refusal (target, kind, expiry, replay)."""
        if cmd.target != self.site_id:
            return CommandOutcome.refused(f"command is for site {cmd.target!r}, this is {self.site_id!r}")
        handler = self._handlers.get(cmd.kind)
        if handler is None:
            return CommandOutcome.refused(
                f"no handler for command kind {cmd.kind!r} (have: {', '.join(self.kinds)})"
            )
        now = self.clock.now()
        trusted = self.clock.quality() != ClockQuality.UNSYNCED
        # The one expiry policy (docs/wire-protocol.md): with an unsynchronised clock, wall-time
        # checks cannot be trusted either way; the replay check below still holds, and handlers
        # bound every effect by their own durations.
        if trusted:
            if cmd.expires_at <= now:
                return CommandOutcome.refused(f"command expired {now - cmd.expires_at:.0f} s ago")
            if cmd.issued_at > now + self.max_future_s:
                return CommandOutcome.refused("command issued in the future; check the centre's clock")
        if cmd.expires_at <= cmd.issued_at:
            return CommandOutcome.refused("expires_at is not after issued_at")
        # Ids are forgotten a day after they expire, by a trusted clock only: a clock running days
        # ahead would forget a command as it records it, and let the same command in again.
        forget_before = now - 86400 if trusted else None
        if not self._seen.add(cmd.command_id, cmd.expires_at, forget_before):
            return CommandOutcome.refused(f"command {cmd.command_id} was already handled (replay)")
        return handler

    def _failure(self, cmd: IncomingCommand, exc: BaseException) -> CommandOutcome:
        if isinstance(exc, SafetyViolation):
            return CommandOutcome.refused(f"safety envelope: {exc}")
        if isinstance(exc, AgentError):
            return CommandOutcome("failed", str(exc))
        log.error("handler for %s failed on command %s", cmd.kind, cmd.command_id, exc_info=exc)
        return CommandOutcome("failed", f"{type(exc).__name__}: {exc}")

    def _log(self, cmd: IncomingCommand, outcome: CommandOutcome) -> CommandOutcome:
        if outcome.outcome == "accepted" and self.clock.quality() == ClockQuality.UNSYNCED:
            # Never silently: the reply says that time was not checked.
            note = "site clock unsynchronised: expiry not checked"
            outcome = CommandOutcome.accepted(f"{outcome.reason}; {note}" if outcome.reason else note)
        log.info("command %s (%s): %s %s", cmd.command_id, cmd.kind, outcome.outcome, outcome.reason)
        return outcome

    def dispatch(self, cmd: IncomingCommand) -> CommandOutcome:
        """Check and apply one command with a handler that answers at once; always returns an outcome."""
        checked = self._check(cmd)
        if isinstance(checked, CommandOutcome):
            return self._log(cmd, checked)
        try:
            answer = checked(cmd)
        except Exception as exc:
            return self._log(cmd, self._failure(cmd, exc))
        if inspect.isawaitable(answer):
            if inspect.iscoroutine(answer):
                answer.close()
            return self._log(cmd, CommandOutcome("failed", f"the {cmd.kind} handler answers asynchronously"))
        return self._log(cmd, answer)

    async def dispatch_async(self, cmd: IncomingCommand, timeout_s: float = 10.0) -> CommandOutcome:
        """Check one command, hand it to its handler (and its owner) and await the answer."""
        checked = self._check(cmd)
        if isinstance(checked, CommandOutcome):
            return self._log(cmd, checked)
        try:
            answer = checked(cmd)
            if inspect.isawaitable(answer):
                answer = await asyncio.wait_for(answer, timeout_s)
        except asyncio.TimeoutError:
            return self._log(cmd, CommandOutcome("failed", f"no answer from the {cmd.kind} loop in {timeout_s:g} s"))
        except Exception as exc:
            return self._log(cmd, self._failure(cmd, exc))
        assert isinstance(answer, CommandOutcome)
        return self._log(cmd, answer)

    def close(self) -> None:
        """Close the replay database."""
        self._seen.close()
