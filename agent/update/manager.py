"""The update manager: checks an update, stages it, switches, watches health, commits or rolls back.

Every step that changes the disk is ordered so a power cut at any moment leaves a whole version
selected by ``current`` (see :mod:`agent.update.versions`), and the journal says what to finish on
the next start (:meth:`UpdateManager.recover`). The manager never restarts anything itself: it asks
its host (the agent) to restart, and the runtime rebuilds the agent from the selected version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.update.gate import GatePolicy, GateView, Verdict, watch
from agent.update.journal import Journal, Outcome, Pending, load_journal, save_journal
from agent.update.versions import Versions
from kernel.commands import CommandOutcome, IncomingCommand
from kernel.errors import ConfigError, UpdateError
from kernel.kinds import KindRegistry

if TYPE_CHECKING:
    from agent.config import SiteConfig, UpdateConfig

log = logging.getLogger("kbe.update")

PHASES = {"committed": "committed", "rolled_back": "rolled-back", "aborted": "aborted"}


class UpdateHost(GateView, Protocol):
    """What the manager needs from the running agent besides the gate's view."""

    def uplink_connected(self) -> bool:
        """Whether replies can be published now."""
        ...

    def send_reply(self, command_id: str, outcome: str, reason: str, phase: str, version: int) -> bool:
        """Publish a command reply; False when it could not be sent."""
        ...

    def emit_event(self, point: str, value: str, meta: dict[str, str]) -> Awaitable[None]:
        """Store an event reading (it reaches the centre in a signed batch)."""
        ...

    def request_restart(self) -> None:
        """Stop this agent core and start it again from the selected version."""
        ...


class UpdateManager:
    """Updates of one site; one instance per agent core, rebuilt on every restart."""

    def __init__(
        self,
        ucfg: UpdateConfig,
        bootstrap: Path,
        versions: Versions,
        journal: Journal,
        kinds: KindRegistry | None = None,
    ) -> None:
        self.ucfg = ucfg
        self.kinds = kinds
        self.bootstrap = bootstrap
        self.versions = versions
        self.journal = journal
        self.running: SiteConfig | None = None
        self.host: UpdateHost | None = None
        self.last_verdict: Verdict | None = None

    # -- start-up ---------------------------------------------------------------------------------

    @classmethod
    def resolve(cls, bootstrap: Path, kinds: KindRegistry | None = None) -> tuple[SiteConfig, UpdateManager | None]:
        """The config to run (the version ``current`` selects) and its manager; finishes an interrupted step.

        ``kinds`` is the registry of device kinds every version is read with (default: discovered).
        """
        from agent.config import load_config

        kinds = kinds if kinds is not None else KindRegistry()
        base = load_config(bootstrap, kinds)
        if base.update is None:
            return base, None
        mgr = cls._open(base.update, bootstrap, kinds)
        mgr.recover()
        mgr.running = mgr._load_current(base)
        return mgr.running, mgr

    @classmethod
    def attach(cls, running: SiteConfig, bootstrap: Path, kinds: KindRegistry | None = None) -> UpdateManager:
        """The manager of a config :meth:`resolve` already chose (and whose journal it already recovered):
        the running agent's, after the hand-over from the process that checked the config."""
        assert running.update is not None
        mgr = cls._open(running.update, bootstrap, kinds)
        mgr.running = running
        return mgr

    @classmethod
    def _open(cls, ucfg: UpdateConfig, bootstrap: Path, kinds: KindRegistry | None) -> UpdateManager:
        try:
            versions = Versions(ucfg.dir, bootstrap)
        except OSError as exc:
            raise ConfigError(str(bootstrap), [f"update.dir: cannot use {str(ucfg.dir)!r}: {exc.strerror or exc}"]) from exc
        try:
            journal = load_journal(versions.journal_path)
        except UpdateError as exc:
            # The highest version this site has ever held is still written in its folders.
            held = [int(p.name) for d in (versions.dir, versions.failed_dir) for p in d.iterdir() if p.name.isdigit()]
            journal = Journal(highest=max([versions.current(), *held]))
            log.error("%s; starting a fresh journal (highest version %d)", exc, journal.highest)
        return cls(ucfg, bootstrap, versions, journal, kinds)

    @property
    def current(self) -> int:
        """The version ``current`` selects."""
        return self.versions.current()

    def _save(self) -> None:
        save_journal(self.versions.journal_path, self.journal)

    def recover(self) -> None:
        """Finish or undo what a crash interrupted, and count starts during a watch."""
        j, cur = self.journal, self.current
        p = j.pending
        if j.state == "switching" and p is not None:
            if cur == p.version:
                j.state = "watching"
            else:
                j.last = Outcome(p.command_id, p.version, "aborted",
                                 f"interrupted before the switch; still on version {cur}", time.time())  # fmt: skip
                j.state, j.pending = "idle", None
        if j.state == "rolling_back" and p is not None:
            self._finish_rollback(p)
        p = j.pending
        if j.state == "watching" and p is not None:
            p.boots += 1
            if p.boots > self.ucfg.max_watch_boots:
                self._rollback(f"the agent started {p.boots} times during the watch of version {p.version}")
        if j.state not in ("watching",) and j.pending is not None:
            j.state, j.pending = "idle", None
        self._save()

    def _load_current(self, base: SiteConfig) -> SiteConfig:
        from agent.config import parse_config

        cur = self.current
        if cur == 0:
            return base
        try:
            return parse_config(self.versions.raw(cur), f"version {cur}", self.bootstrap.parent, self.kinds)
        except (ConfigError, UpdateError) as exc:
            problem = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
            log.error("version %d does not load (%s)", cur, problem)
            p = self.journal.pending
            if self.journal.state == "watching" and p is not None and p.version == cur:
                self._rollback(f"version {cur} does not load: {problem}")
                return self._load_current(base)
            log.error("running the site's own config file (version 0) instead")
            self.versions.switch(0)
            return base

    # -- rollback ---------------------------------------------------------------------------------

    def _rollback(self, reason: str) -> None:
        p = self.journal.pending
        assert p is not None
        log.error("rolling back version %d to %d: %s", p.version, p.previous, reason)
        self.journal.state = "rolling_back"
        self.journal.last = Outcome(p.command_id, p.version, "rolled_back",
                                    f"rolled back to version {p.previous}: {reason}", time.time())  # fmt: skip
        self._save()
        self._finish_rollback(p)
        self._save()

    def _finish_rollback(self, p: Pending) -> None:
        if self.current != p.previous:
            self.versions.switch(p.previous)
        if p.version != p.previous and self.versions.set_aside(p.version) is not None:
            self.journal.failed = [*self.journal.failed[-9:], p.version]
        self.journal.state, self.journal.pending = "idle", None

    # -- an update arrives ------------------------------------------------------------------------

    def handle(self, cmd: IncomingCommand) -> CommandOutcome:
        """Check, stage and switch to an update; refuse it (nothing changed) when anything is wrong."""
        try:
            return self._handle(cmd)
        except UpdateError as exc:
            log.warning("update %s refused: %s", cmd.command_id, exc)
            return CommandOutcome.refused(str(exc))

    def _handle(self, cmd: IncomingCommand) -> CommandOutcome:
        # An update is rare: its checks (pydantic models, as `config check`) are imported when one comes.
        from pydantic import ValidationError

        from agent.update.body import UpdateBody
        from agent.update.stage import candidate_document, stage_model, validate_document
        from kernel.config_base import validation_problems

        j, cur = self.journal, self.current
        if j.state != "idle" and j.pending is not None:
            raise UpdateError(f"version {j.pending.version} is still being watched; try again after it")
        try:
            body = UpdateBody.model_validate(cmd.body)
        except ValidationError as exc:
            raise UpdateError("; ".join(validation_problems(exc))) from exc
        if body.rollback:
            if body.version >= cur:
                raise UpdateError(f"a rollback goes to an older version; {body.version} is not older than {cur}")
        elif body.version <= j.highest:
            raise UpdateError(
                f"version {body.version} is not newer than {j.highest} (a replay, or a downgrade not signed as a rollback)"
            )
        assert self.running is not None
        doc = candidate_document(body, self.versions, cur)
        reuse = body.rollback and body.config is None and body.patch is None
        stage = None if reuse else self.versions.staging(body.version)
        try:
            if body.type == "model" and stage is not None:
                doc = stage_model(body, doc, self.running, stage)
            validate_document(doc, self.running, self.bootstrap.parent, body.version, self.kinds)
            if stage is not None:
                self.versions.commit_stage(body.version, stage, doc)
        except BaseException:
            if stage is not None:
                import shutil

                shutil.rmtree(stage, ignore_errors=True)
            raise
        j.highest = max(j.highest, body.version)
        j.state = "switching"
        j.pending = Pending(cmd.command_id, body.version, body.type, cur, body.watch_s,
                            body.min_success, body.release)  # fmt: skip
        self._save()
        self.versions.switch(body.version)
        j.state = "watching"
        self._save()
        log.info("update %s: version %d switched in (was %d); restarting", cmd.command_id, body.version, cur)
        if self.host is not None:
            self.host.request_restart()
        return CommandOutcome.accepted(
            f"version {body.version} staged and switched in (was {cur}); watching {body.watch_s:.0f} s"
        )

    # -- after start: watch, commit or roll back, report ------------------------------------------

    async def run(self, host: UpdateHost) -> None:
        """Watch the version under watch, then report the last outcome once the uplink is up."""
        self.host = host
        j, p = self.journal, self.journal.pending
        if j.state == "watching" and p is not None:
            policy = GatePolicy(
                watch_s=p.watch_s,
                min_success=p.min_success if p.min_success is not None else self.ucfg.min_success,
                grace_s=min(self.ucfg.grace_s, p.watch_s / 2),
            )
            verdict = await watch(host, policy)
            self.last_verdict = verdict
            if verdict.healthy:
                j.last = Outcome(p.command_id, p.version, "committed",
                                 f"committed version {p.version}: {verdict.reason}", time.time())  # fmt: skip
                if p.release is not None:
                    j.release = p.release
                j.state, j.pending = "idle", None
                self._save()
                self.versions.prune({p.version, p.previous}, self.ucfg.keep_versions)
                log.info("version %d committed: %s", p.version, verdict.reason)
            else:
                first = "" if verdict.first_failure_s is None else f"first failure {verdict.first_failure_s:.1f} s, "
                self._rollback(f"{verdict.reason} ({first}unhealthy {verdict.elapsed_s:.1f} s into the watch)")
                host.request_restart()
                return
        await self._report(host)

    async def _report(self, host: UpdateHost) -> None:
        last = self.journal.last
        if last is None or last.reported:
            return
        meta = {"version": str(last.version), "command_id": last.command_id, "reason": last.reason}
        await host.emit_event("update", last.outcome, meta)
        outcome = "accepted" if last.outcome == "committed" else "failed"
        while True:  # the uplink may still be connecting after the restart
            if host.uplink_connected() and host.send_reply(
                last.command_id, outcome, last.reason, PHASES[last.outcome], last.version
            ):
                break
            await asyncio.sleep(0.2)
        last.reported = True
        self._save()

    def status(self) -> dict[str, Any]:
        """Fields for the site's retained status message."""
        j = self.journal
        return {
            "config_version": self.current,
            "update_state": j.state,
            "release": j.release,
        }
