"""Signal heads on relays driven from the board's GPIO (gpiozero), for small junctions.

Each group has a head with red, yellow (vehicles) and green relays, and optionally a separate
``yield_green`` aspect (for example a flashing yellow arrow) for groups the plan runs permissive.
Pedestrian heads have red (DON'T WALK) and green (WALK); the clearance blinks the red. The read-back
is the state of the output pins, decoded per head: exactly one aspect must be lit, otherwise the
read-back is invalid. Flash: every yellow blinks at 1 Hz, pedestrian heads dark.
"""

from __future__ import annotations

from typing import Any

from drivers.signals.base import ShownState
from drivers.signals.config import GpioHeadConfig
from drivers.signals.indications import Indication, SignalState
from kernel.errors import FrameError

R, Y, G, GY = Indication.RED, Indication.YELLOW, Indication.GREEN, Indication.GREEN_YIELD


class _Head:
    def __init__(self, cfg: GpioHeadConfig, pin_factory: Any) -> None:
        from gpiozero import DigitalOutputDevice

        def out(pin: int | None) -> Any:
            return (
                None
                if pin is None
                else DigitalOutputDevice(pin, pin_factory=pin_factory, initial_value=False)
            )

        self.red, self.yellow, self.green = out(cfg.red), out(cfg.yellow), out(cfg.green)
        self.yield_green = out(cfg.yield_green)
        self.lamps = [d for d in (self.red, self.yellow, self.green, self.yield_green) if d is not None]
        self.pedestrian = cfg.yellow is None
        self.blinking: Any = None
        self.dark = False

    def show(self, ind: Indication) -> None:
        lamp = {
            R: self.red,
            Y: self.red if self.pedestrian else self.yellow,
            G: self.green,
            GY: self.yield_green,
        }[ind]
        if lamp is None:
            raise FrameError(f"head has no aspect for {ind.value!r}")
        blink = ind == Y and self.pedestrian
        for d in self.lamps:
            if d is not lamp:
                d.off()
        if blink:
            if self.blinking is not lamp:
                lamp.blink(on_time=0.5, off_time=0.5)
            self.blinking = lamp
        else:
            lamp.on()
            self.blinking = None

    def flash(self) -> None:
        for d in self.lamps:
            if d is not self.yellow:
                d.off()
        self.blinking = self.yellow
        if self.yellow is not None:
            self.yellow.blink(on_time=0.5, off_time=0.5)

    def read(self) -> Indication:
        if self.blinking is not None:
            others = [d for d in self.lamps if d is not self.blinking and d.value]
            if others:
                raise FrameError("a lamp is lit while the head blinks")
            if self.blinking is self.yellow:
                return Indication.FLASH
            return Y
        lit = [d for d in self.lamps if d.value]
        if self.dark and not lit:
            return Indication.DARK
        if len(lit) != 1:
            raise FrameError(f"{len(lit)} aspects lit")
        d = lit[0]
        return R if d is self.red else Y if d is self.yellow else G if d is self.green else GY

    def close(self) -> None:
        for d in self.lamps:
            d.close()


class GpioSignalHeads:
    """A :class:`~drivers.signals.base.SignalOutput` on gpiozero relays (pass a pin factory in tests)."""

    def __init__(self, heads: dict[str, GpioHeadConfig], pin_factory: Any = None) -> None:
        self.groups = tuple(heads)
        self._heads = {g: _Head(cfg, pin_factory) for g, cfg in heads.items()}
        self.flashing = False
        self.flash()

    def write(self, state: SignalState, seq: int) -> None:
        """Switch the relays of every head (no sequence echo on plain relays)."""
        if self.flashing:
            return
        for g, ind in state.items():
            self._heads[g].show(ind)

    def read_back(self) -> ShownState:
        """Decode the lamp outputs per head."""
        shown: dict[str, Indication] = {}
        for g, head in self._heads.items():
            try:
                shown[g] = head.read()
            except FrameError as exc:
                raise FrameError(f"head {g}: {exc}") from exc
        return ShownState(shown, None, "flashing" if self.flashing else None)

    def flash(self) -> None:
        """Blink every vehicle yellow; pedestrian heads go dark."""
        self.flashing = True
        for head in self._heads.values():
            if head.pedestrian:
                for d in head.lamps:
                    d.off()
                head.blinking = None
                head.dark = True
            else:
                head.flash()

    def reset(self) -> None:
        """Operator reset: all red."""
        self.flashing = False
        for head in self._heads.values():
            head.dark = False
            head.show(R)

    def close(self) -> None:
        """Release the pins."""
        for head in self._heads.values():
            head.close()
