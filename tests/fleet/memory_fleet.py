"""An in-memory fleet for the wave engine's unit tests: devices that take a pin or a variable on the
next poll and then report health through a behaviour function, on a simulated clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.fleet_report import HealthTag
from provisioning.fleet.waves import Device


class FakeClock:
    """Monotonic and wall time that move only when the engine sleeps."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.t - 1_700_000_000.0

    def wall(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds


@dataclass
class SimDevice:
    uuid: str
    online: bool = True
    release: str = "old"
    pinned: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    restarts: int = 0
    reports: bool = True
    skew: float = 0.0  # this device's clock minus the operator's


# behaviour(device) -> (ok, restarts delta per poll) for the running release/env
Behaviour = Callable[[SimDevice], tuple[bool, int]]


class MemoryFleet:
    """A FleetBackend whose devices follow their pins and report health a poll later."""

    def __init__(self, n: int, clock: FakeClock, behaviour: Behaviour, fleet_release: str = "old") -> None:
        self.clock = clock
        self.behaviour = behaviour
        self.fleet_release = fleet_release
        self.fleet_env: dict[str, str] = {}
        self.devices = {
            f"dev{i:03d}": SimDevice(f"dev{i:03d}", started=clock.wall() - 3600) for i in range(n)
        }
        self.marks: dict[str, str] = {}
        self.calls: list[tuple[str, tuple[str, ...], object]] = []

    def _target(self, d: SimDevice) -> str:
        return d.pinned or self.fleet_release

    def _step(self) -> None:
        for d in self.devices.values():
            if d.online and d.release != self._target(d):
                d.release = self._target(d)
                d.started = self.clock.wall()

    def list_devices(self) -> list[Device]:
        self._step()
        return [
            Device(d.uuid, d.uuid, d.online, self.clock.wall(), d.release, d.pinned)
            for d in self.devices.values()
        ]

    def read_health(self) -> dict[str, HealthTag]:
        out = {}
        for d in self.devices.values():
            if not d.reports or not d.online:
                continue
            ok, more = self.behaviour(d)
            d.restarts += more
            out[d.uuid] = HealthTag(
                ok=ok, at=self.clock.wall() + d.skew, started=d.started + d.skew, restarts=d.restarts
            )
        return out

    def read_env(self, name: str) -> dict[str, str]:
        return {u: d.env[name] for u, d in self.devices.items() if name in d.env}

    def pin_release(self, uuids: Sequence[str], commit: str | None) -> None:
        self.calls.append(("pin", tuple(uuids), commit))
        for u in uuids:
            self.devices[u].pinned = commit

    def set_env(self, uuids: Sequence[str], name: str, value: str | None) -> None:
        self.calls.append(("env", tuple(uuids), (name, value)))
        for u in uuids:
            d = self.devices[u]
            if value is None:
                d.env.pop(name, None)
            else:
                d.env[name] = value
            d.started = self.clock.wall()  # the supervisor restarts the service with the new variable

    def read_marks(self) -> dict[str, str]:
        return dict(self.marks)

    def set_marks(self, marks: Mapping[str, str | None]) -> None:
        for u, v in marks.items():
            if v is None:
                self.marks.pop(u, None)
            else:
                self.marks[u] = v

    def pin_fleet(self, commit: str) -> None:
        self.calls.append(("pin_fleet", (), commit))
        self.fleet_release = commit

    def set_fleet_env(self, name: str, value: str) -> None:
        self.calls.append(("fleet_env", (), (name, value)))
        self.fleet_env[name] = value


class Recorder:
    """A Progress that keeps everything."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.updates = 0

    def event(self, message: str) -> None:
        self.events.append(message)

    def update(self, status: object) -> None:
        self.updates += 1
