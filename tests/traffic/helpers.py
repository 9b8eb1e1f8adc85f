"""Shared pieces for the traffic tests: the test junction, a simulated clock, an emulated controller."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_config
from control.traffic.card import program_card
from control.traffic.config import IntersectionConfig
from control.traffic.envelope import SafetyEnvelope
from drivers.signals.emulator import ControllerEmulator, DirectLink
from drivers.signals.indications import Indication
from drivers.signals.modbus import ModbusSignalController
from kernel.errors import TransportError
from kernel.readings import Reading

SITE = Path(__file__).with_name("site.yaml")
R, Y, G, GY = Indication.RED, Indication.YELLOW, Indication.GREEN, Indication.GREEN_YIELD


def junction() -> IntersectionConfig:
    """The test junction from site.yaml."""
    cfg = load_config(SITE)
    assert cfg.traffic is not None
    return cfg.traffic.intersections[0]


class SimClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FaultyLink(DirectLink):
    """A direct link that can drop (link loss) or replay old read-backs (stale read-back)."""

    def __init__(self, emulator: ControllerEmulator) -> None:
        super().__init__(emulator)
        self.down = False
        self.stale = False
        self._last: list[int] | None = None

    def write_registers(self, address: int, values: list[int]) -> None:
        if self.down:
            raise TransportError("injected link loss")
        super().write_registers(address, values)

    def read_input_registers(self, address: int, count: int) -> list[int]:
        if self.down:
            raise TransportError("injected link loss")
        regs = super().read_input_registers(address, count)
        if self.stale and self._last is not None:
            return self._last
        self._last = regs
        return regs


class Rig:
    """Envelope -> Modbus driver -> emulated controller with its own monitor, on a simulated clock."""

    def __init__(self, ix: IntersectionConfig | None = None) -> None:
        self.ix = ix or junction()
        self.clock = SimClock()
        self.emu = ControllerEmulator(program_card(self.ix), self.clock, watchdog_s=0.5)
        self.link = FaultyLink(self.emu)
        self.reports: list[Reading] = []
        driver = ModbusSignalController(tuple(g.name for g in self.ix.groups), self.link)
        self.env = SafetyEnvelope(self.ix, driver, self.clock, self.reports.append)
        self.env.start()

    def state(self, **kw: Indication) -> dict[str, Indication]:
        """All red except the groups given."""
        s = {g.name: R for g in self.ix.groups}
        s.update(kw)
        return s

    def hold(self, seconds: float, state: dict[str, Indication] | None = None, dt: float = 0.1) -> None:
        """Keep commanding ``state`` (default: what is shown) every ``dt`` for ``seconds``."""
        target = state or self.env.shown()
        end = self.clock.t + seconds - 1e-9
        while self.clock.t < end:
            self.clock.t = round(self.clock.t + dt, 6)
            self.env.command(target)

    def go(self, seconds: float, **kw: Indication) -> None:
        """Command a state now, then hold it."""
        s = self.state(**kw)
        self.env.command(s)
        self.hold(seconds, s)
