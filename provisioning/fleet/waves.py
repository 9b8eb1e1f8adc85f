"""Wave rollouts of a release or a configuration variable, gated on the agents' own health.

Independent of balena: everything goes through a :class:`FleetBackend` (``balena_backend.py`` is one).
A rollout splits the devices not yet on the change into waves (a canary, then cumulative
percentages of the fleet), applies the change to one wave, and watches it:

* a device is *pending* until it runs the change and a health report arrives from an agent process
  other than the one that reported before the change (``HealthTag.started`` differs);
* it is *failed* when such a report says not ok, the agent process or its supervised tasks restart
  during the watch, or it is still pending after ``update_timeout_s`` (failure is sticky);
* it is *offline* when it goes offline after reporting healthy (not healthy, not failed);
* it is *healthy* otherwise.

The wave stops at once when failed devices exceed ``error`` (a fraction of the wave); once every
device has left *pending* (or the update timeout passed) the wave is watched for ``watch_s``; it
passes when healthy devices reach ``success``. A failed wave is rolled back (each device back to
what it had before, from the ``kbe.rollout`` mark written before the change) and the rollout stops.
"""

from __future__ import annotations

import json
import math
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from agent.fleet_report import HealthTag
from kernel.errors import FleetError

_T = TypeVar("_T")

ROLLOUT_TAG = "kbe.rollout"
# Only for a device with no report before the change: how far its clock may be behind this one.
CLOCK_SKEW_S = 60.0


@dataclass(frozen=True)
class Device:
    """One device as the fleet engine sees it."""

    uuid: str
    name: str
    online: bool
    last_seen: float | None  # epoch seconds of the last connectivity event
    release: str | None  # commit of the release it runs
    pinned: str | None  # commit it is pinned to; None when it tracks the fleet's release


@dataclass(frozen=True)
class Change:
    """What a rollout moves: a release (full commit) or one device environment variable."""

    release: str | None = None
    env_name: str | None = None
    env_value: str | None = None

    def __post_init__(self) -> None:
        if (self.release is None) == (self.env_name is None):
            raise FleetError("a rollout moves either a release or one variable (NAME=VALUE), not both")

    def describe(self) -> str:
        """Short human text."""
        return f"release {self.release[:12]}" if self.release else f"{self.env_name}={self.env_value}"

    def to_json(self) -> dict[str, str | None]:
        """For the rollout mark."""
        if self.release:
            return {"release": self.release}
        return {"env": self.env_name, "value": self.env_value}

    @classmethod
    def from_json(cls, raw: Mapping[str, str | None]) -> Change:
        """Inverse of :meth:`to_json`."""
        if raw.get("release"):
            return cls(release=raw["release"])
        return cls(env_name=raw.get("env"), env_value=raw.get("value"))


@dataclass(frozen=True)
class Mark:
    """The ``kbe.rollout`` tag on a device: which rollout and wave changed it, and what it had before."""

    rollout: str
    wave: int
    change: Change
    previous: str | None  # pinned commit or variable value before; None: tracked fleet / unset

    def encode(self) -> str:
        """Tag value."""
        return json.dumps(
            {"id": self.rollout, "wave": self.wave, "change": self.change.to_json(), "prev": self.previous},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, value: str) -> Mark | None:
        """Parse a tag value; None when it is not a mark."""
        try:
            raw = json.loads(value)
            return cls(str(raw["id"]), int(raw["wave"]), Change.from_json(raw["change"]), raw["prev"])
        except (ValueError, KeyError, TypeError, FleetError):
            return None


class FleetBackend(Protocol):
    """What a fleet engine (balena, or a test double) must offer."""

    def list_devices(self) -> list[Device]:
        """Every device of the fleet."""
        ...

    def read_health(self) -> dict[str, HealthTag]:
        """The latest agent health report of each device that has one, by uuid."""
        ...

    def read_env(self, name: str) -> dict[str, str]:
        """The device-level value of variable ``name``, by uuid (devices without one are absent)."""
        ...

    def pin_release(self, uuids: Sequence[str], commit: str | None) -> None:
        """Pin devices to a release; None makes them track the fleet's release again."""
        ...

    def set_env(self, uuids: Sequence[str], name: str, value: str | None) -> None:
        """Set a device variable on devices; None removes it."""
        ...

    def read_marks(self) -> dict[str, str]:
        """The ``kbe.rollout`` tag value of each device that has one, by uuid."""
        ...

    def set_marks(self, marks: Mapping[str, str | None]) -> None:
        """Write (value) or remove (None) the ``kbe.rollout`` tag of each device."""
        ...

    def pin_fleet(self, commit: str) -> None:
        """Make ``commit`` the release the whole fleet runs."""
        ...

    def set_fleet_env(self, name: str, value: str) -> None:
        """Set a fleet-wide variable."""
        ...


@dataclass(frozen=True)
class Gate:
    """A wave's health gate (fractions of the wave's devices, seconds)."""

    success: float = 0.95
    error: float = 0.05
    watch_s: float = 600.0
    update_timeout_s: float = 1800.0
    stale_s: float = 180.0
    poll_s: float = 15.0

    def __post_init__(self) -> None:
        for name in ("success", "error"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FleetError(f"gate {name}: {value} is not a fraction between 0 and 1")
        if self.poll_s <= 0 or self.watch_s < 0 or self.update_timeout_s <= 0:
            raise FleetError("gate: poll, watch and update timeout must be positive")


class Clock(Protocol):
    """Time for the engine: monotonic for durations, wall for comparing with device reports."""

    def monotonic(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> float:
        """Epoch seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    def wall(self) -> float:
        """time.time()."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """time.sleep()."""
        time.sleep(seconds)


def check_percents(percents: Sequence[float]) -> None:
    """Wave sizes must be increasing cumulative percentages in (0, 100]."""
    if not percents or any(not 0 < p <= 100 for p in percents) or list(percents) != sorted(set(percents)):
        raise FleetError(f"waves: {list(percents)} must be increasing percentages in (0, 100]")


def plan_waves(
    devices: Sequence[Device],
    change: Change,
    canary: int,
    percents: Sequence[float],
    current_env: Mapping[str, str] | None = None,
) -> list[list[Device]]:
    """Split the devices not yet on ``change`` into waves: ``canary`` online devices first, then
    cumulative percentages of all candidates (``[10, 50, 100]``: up to 10 %, 50 %, all).
    ``current_env``: the device-level values of the variable a variable change sets."""
    if canary < 0:
        raise FleetError(f"canary: {canary} must be 0 or more")
    check_percents(percents)
    if percents[-1] != 100:
        percents = [*percents, 100.0]
    env = current_env or {}
    todo = [
        d
        for d in devices
        if not (change.release is not None and d.pinned == change.release)
        and not (change.env_name is not None and env.get(d.uuid) == change.env_value)
    ]
    # Online devices first (the canary must be able to answer), then by uuid: the plan is repeatable.
    todo.sort(key=lambda d: (not d.online, d.uuid))
    canary = min(canary, sum(1 for d in todo if d.online))
    return cut_waves(todo, [canary, *(math.ceil(len(todo) * pct / 100.0) for pct in percents)])


def cut_waves(items: Sequence[_T], marks: Iterable[int]) -> list[list[_T]]:
    """Cut ``items``, in rollout order, into consecutive waves that end at each cumulative count of
    ``marks`` (a canary, then each share of the fleet); a count not beyond the end of the previous
    wave adds no wave, and items past the last count are in none (callers keep the counts within
    ``len(items)``: a larger one gives an empty wave). The wave planning of both rollout
    paths: balena (:func:`plan_waves`) and the centre's MQTT updates (``provisioning.centre.waves``)."""
    waves: list[list[_T]] = []
    done = 0
    for mark in marks:
        if mark > done:
            waves.append(list(items[done:mark]))
            done = mark
    return waves


@dataclass
class WaveStatus:
    """Where a wave stands at one poll."""

    index: int
    total_waves: int
    size: int
    healthy: int = 0
    failed: int = 0
    pending: int = 0
    offline: int = 0
    watching_for_s: float | None = None
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass
class RolloutResult:
    """How a rollout ended."""

    rollout: str
    change: Change
    waves_passed: int
    waves_total: int
    failed_wave: int | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    rolled_back: list[str] = field(default_factory=list)
    skipped_offline: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every wave passed."""
        return self.failed_wave is None


class Progress(Protocol):
    """Where a rollout reports what it does."""

    def event(self, message: str) -> None:
        """A one-off event (wave started, passed, failed, rolled back)."""
        ...

    def update(self, status: WaveStatus) -> None:
        """The state of the current wave, at every poll."""
        ...


class _Watch:
    """What one wave's watch remembers about each device's reports."""

    def __init__(self, before: Mapping[str, float], applied_at: float) -> None:
        self.before = dict(before)  # uuid -> start of the agent process that reported before the change
        self.applied_at = applied_at
        self.first: dict[str, HealthTag] = {}  # first healthy report of the changed agent
        self._seen: dict[str, tuple[float, float]] = {}  # uuid -> (report time, monotonic when first seen)

    def from_changed_agent(self, uuid: str, tag: HealthTag) -> bool:
        """True when ``tag`` comes from an agent process started after the change.

        With an earlier report, any other process is new (no clock comparison). A device that never
        reported before falls back to comparing its start time with the time the change was made.
        Not remembered: starts seen while the API still shows the old release. balena reports the
        running release some seconds after the new container starts, so the changed agent's first
        reports often arrive before that; for a release, ``Device.release`` is checked as well."""
        if uuid in self.before:
            return tag.started != self.before[uuid]
        return tag.started >= self.applied_at - CLOCK_SKEW_S

    def last_new_report(self, uuid: str, tag: HealthTag, now: float) -> float:
        """Monotonic time (this machine's) at which the current report of ``uuid`` was first seen."""
        seen = self._seen.get(uuid)
        if seen is None or seen[0] != tag.at:
            self._seen[uuid] = (tag.at, now)
            return now
        return seen[1]


class Rollout:
    """Runs a change through waves on a backend."""

    def __init__(
        self,
        backend: FleetBackend,
        change: Change,
        gate: Gate,
        progress: Progress,
        clock: Clock | None = None,
        rollout_id: str | None = None,
        max_read_errors: int = 5,
    ) -> None:
        self.backend = backend
        self.change = change
        self.gate = gate
        self.progress = progress
        self.clock = clock or SystemClock()
        self.id = rollout_id or uuidlib.uuid4().hex[:8]
        self.current_wave: int | None = None
        self.max_read_errors = max_read_errors

    def run(self, waves: Sequence[Sequence[Device]]) -> RolloutResult:
        """Apply wave after wave; stop and roll back the first wave that misses its gate."""
        result = RolloutResult(self.id, self.change, 0, len(waves))
        self.progress.event(
            f"rollout {self.id}: {self.change.describe()} in {len(waves)} waves "
            f"({', '.join(str(len(w)) for w in waves)} devices)"
        )
        for i, planned in enumerate(waves):
            # A device offline when its wave starts is left alone: it could not be watched, and an
            # unwatched change is what this tool exists to avoid. Rerun the rollout to reach it.
            online = {d.uuid for d in self.backend.list_devices() if d.online}
            wave = [d for d in planned if d.uuid in online]
            skipped = sorted(d.uuid for d in planned if d.uuid not in online)
            result.skipped_offline += skipped
            if skipped:
                self.progress.event(
                    f"wave {i + 1}/{len(waves)}: {len(skipped)} devices offline, left unchanged"
                )
            if not wave:
                result.waves_passed += 1
                continue
            reasons = self._run_wave(i, len(waves), wave)
            if reasons is not None:
                result.failed_wave = i
                result.reasons = reasons
                result.rolled_back = self.rollback_devices([d.uuid for d in wave])
                self.progress.event(
                    f"wave {i + 1}/{len(waves)} FAILED ({len(result.reasons)} devices): rolled back "
                    f"{len(result.rolled_back)} devices; rollout stopped"
                )
                return result
            result.waves_passed += 1
            self.progress.event(f"wave {i + 1}/{len(waves)} passed ({len(wave)} devices)")
        return result

    # -- one wave ---------------------------------------------------------------------------------

    def _apply(self, index: int, wave: Sequence[Device]) -> None:
        uuids = [d.uuid for d in wave]
        if self.change.release is not None:
            previous: dict[str, str | None] = {d.uuid: d.pinned for d in wave}
        else:
            assert self.change.env_name is not None
            env = self.backend.read_env(self.change.env_name)
            previous = {u: env.get(u) for u in uuids}
        # The mark goes first: whatever happens next, rollback knows what each device had.
        self.backend.set_marks({u: Mark(self.id, index, self.change, previous[u]).encode() for u in uuids})
        if self.change.release is not None:
            self.backend.pin_release(uuids, self.change.release)
        else:
            assert self.change.env_name is not None
            self.backend.set_env(uuids, self.change.env_name, self.change.env_value)

    def _run_wave(self, index: int, total: int, wave: Sequence[Device]) -> dict[str, str] | None:
        """Apply and watch one wave: None when it passed, else the failed devices and why."""
        self.progress.event(
            f"wave {index + 1}/{total}: {len(wave)} devices: "
            + ", ".join(d.name for d in wave[:8])
            + (" …" if len(wave) > 8 else "")
        )
        self.current_wave = index
        uuids = {d.uuid for d in wave}
        # Which agent process each device runs now: a report from another process after the change is
        # the changed agent's. Compared with the device's own earlier report, not with this machine's
        # clock, so a skewed device clock cannot fake or hide it.
        before = {u: t.started for u, t in self._read(self.backend.read_health, index).items() if u in uuids}
        applied_at = self.clock.wall()
        self._apply(index, wave)
        t0 = self.clock.monotonic()
        watch = _Watch(before, applied_at)
        failed: dict[str, str] = {}
        watch_from: float | None = None
        while True:
            devices = {d.uuid: d for d in self._read(self.backend.list_devices, index) if d.uuid in uuids}
            health = self._read(self.backend.read_health, index)
            now = self.clock.monotonic()
            timed_out = now - t0 > self.gate.update_timeout_s
            status = WaveStatus(index, total, len(wave))
            healthy: set[str] = set()
            for u in sorted(uuids - failed.keys()):
                verdict = self._classify(devices.get(u), health.get(u), watch, now)
                if verdict == "pending" and timed_out:
                    verdict = (
                        f"no health report from the changed agent after {self.gate.update_timeout_s:.0f} s"
                    )
                if verdict == "healthy":
                    healthy.add(u)
                    status.healthy += 1
                elif verdict == "pending":
                    status.pending += 1
                elif verdict == "offline":
                    status.offline += 1  # seen healthy, now offline: not healthy, not (yet) failed
                else:
                    failed[u] = verdict  # sticky: a device that failed once fails the wave's count
            status.failed = len(failed)
            status.reasons = dict(failed)
            if status.failed > self.gate.error * len(wave):
                self.progress.update(status)
                return failed
            if watch_from is None and status.pending == 0:
                watch_from = now
            if watch_from is not None:
                status.watching_for_s = now - watch_from
                if status.watching_for_s >= self.gate.watch_s:
                    self.progress.update(status)
                    if status.healthy >= self.gate.success * len(wave):
                        return None
                    short = {u: "not healthy at the end of the watch" for u in uuids if u not in healthy}
                    return {**short, **failed}
            self.progress.update(status)
            self.clock.sleep(self.gate.poll_s)

    def _read(self, fn: Callable[[], _T], index: int) -> _T:
        """Read from the backend; a flaky link to the API must not decide a wave: retry, within a budget."""
        for attempt in range(1, self.max_read_errors + 2):
            try:
                return fn()
            except FleetError as exc:
                if attempt > self.max_read_errors:
                    raise FleetError(
                        f"{exc}; gave up after {attempt} failed reads in wave {index + 1}, which may be "
                        f"left changed and marked: edge-agent fleet rollback --rollout {self.id} "
                        f"--wave {index + 1}"
                    ) from exc
                self.progress.event(f"balena API read failed ({attempt}/{self.max_read_errors}): {exc}")
                self.clock.sleep(self.gate.poll_s)
        raise AssertionError("unreachable")

    def _classify(self, device: Device | None, tag: HealthTag | None, watch: _Watch, now: float) -> str:
        """'healthy', 'pending', 'offline', or the reason the device failed."""
        if device is None:
            return "removed from the fleet"
        if device.uuid in watch.first and not device.online:
            return "offline"
        if self.change.release is not None and device.release != self.change.release:
            return "pending"
        if tag is None or not watch.from_changed_agent(device.uuid, tag):
            return "pending"
        if now - watch.last_new_report(device.uuid, tag, now) > self.gate.stale_s:
            return "pending"  # the changed agent stopped reporting
        if not tag.ok:
            return "agent unhealthy: " + ("; ".join(tag.why) or "not ok")
        first = watch.first.setdefault(device.uuid, tag)
        if tag.started != first.started:
            return "agent process restarted during the watch"
        if tag.restarts > first.restarts:
            return f"supervised tasks restarted {tag.restarts - first.restarts} times during the watch"
        return "healthy"

    # -- rollback ---------------------------------------------------------------------------------

    def rollback_devices(self, uuids: Sequence[str]) -> list[str]:
        """Put devices back as their marks say (this rollout's marks only), then remove the marks."""
        marks = {u: Mark.decode(v) for u, v in self.backend.read_marks().items() if u in set(uuids)}
        return restore(
            self.backend, {u: m for u, m in marks.items() if m is not None and m.rollout == self.id}
        )


def restore(backend: FleetBackend, marks: Mapping[str, Mark]) -> list[str]:
    """Revert each marked device to its previous release pin or variable value; remove the marks."""
    by_prev: dict[tuple[str, str | None, str | None], list[str]] = {}
    for u, m in marks.items():
        key = ("release", None, m.previous) if m.change.release else ("env", m.change.env_name, m.previous)
        by_prev.setdefault(key, []).append(u)
    for (what, name, prev), uuids in sorted(by_prev.items(), key=lambda kv: str(kv[0])):
        if what == "release":
            backend.pin_release(uuids, prev)
        else:
            assert name is not None
            backend.set_env(uuids, name, prev)
    backend.set_marks(dict.fromkeys(marks))
    return sorted(marks)


def promote(backend: FleetBackend, change: Change | None = None) -> tuple[Change, list[str]]:
    """Make a rolled-out change the fleet's own: pin the fleet (or set the fleet variable), then let
    the devices the rollout changed follow the fleet again and remove their marks."""
    marks = {u: m for u, v in backend.read_marks().items() if (m := Mark.decode(v)) is not None}
    if change is None:
        changes = {m.change for m in marks.values()}
        if len(changes) != 1:
            raise FleetError(
                "promote: name the change (--release or --env): "
                + (f"{len(changes)} different rollouts are marked" if changes else "no rollout is marked")
            )
        change = changes.pop()
    mine = sorted(u for u, m in marks.items() if m.change == change)
    if change.release is not None:
        backend.pin_fleet(change.release)
        if mine:
            backend.pin_release(mine, None)
    else:
        assert change.env_name is not None
        assert change.env_value is not None
        backend.set_fleet_env(change.env_name, change.env_value)
        if mine:
            backend.set_env(mine, change.env_name, None)
    if mine:
        backend.set_marks(dict.fromkeys(mine))
    return change, mine


def rollback(backend: FleetBackend, rollout: str | None = None, wave: int | None = None) -> list[str]:
    """Revert marked devices (all, one rollout's, or one wave of it) to what they had before."""
    marks = {u: m for u, v in backend.read_marks().items() if (m := Mark.decode(v)) is not None}
    ids = {m.rollout for m in marks.values()}
    if rollout is None and len(ids) > 1:
        raise FleetError(
            f"rollback: several rollouts are marked ({', '.join(sorted(ids))}); name one with --rollout"
        )
    chosen = {
        u: m
        for u, m in marks.items()
        if (rollout is None or m.rollout == rollout) and (wave is None or m.wave == wave)
    }
    if not chosen:
        raise FleetError("rollback: no device carries a matching rollout mark")
    return restore(backend, chosen)


ProgressFactory = Callable[[], Progress]
