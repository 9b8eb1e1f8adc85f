"""Where controllers find the running GPIO banks, by device name: a service of the run context.

``build_sources`` of the ``gpio`` kind registers each bank in ``ctx.services.get(GpioBanks)``; a
controller in the same run (lighting) looks its bank up there. Nothing is kept in a module global,
so two agents or a test and a rig in one process never see each other's pins.
"""

from __future__ import annotations

import threading

from drivers.gpio.bank import GpioBank
from kernel.errors import DeviceError
from kernel.source import RunContext


class GpioBanks:
    """The GPIO banks of one run, by device name."""

    def __init__(self) -> None:
        self._banks: dict[str, GpioBank] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, ctx: RunContext) -> GpioBanks:
        """The banks of the run ``ctx`` belongs to."""
        return ctx.services.get(cls)

    def register(self, bank: GpioBank) -> None:
        """Make ``bank`` reachable by its device name (replacing, and closing, an older bank of that name)."""
        with self._lock:
            old = self._banks.get(bank.device)
            self._banks[bank.device] = bank
        if old is not None and old is not bank:
            old.close()

    def get(self, device: str) -> GpioBank:
        """The bank of gpio device ``device``; :class:`DeviceError` naming the known ones otherwise."""
        with self._lock:
            bank = self._banks.get(device)
            if bank is None:
                known = ", ".join(sorted(self._banks)) or "none"
                raise DeviceError(f"no gpio device {device!r} (have {known})")
            return bank

    def unregister(self, device: str) -> None:
        """Forget (and close) the bank of ``device``."""
        with self._lock:
            bank = self._banks.pop(device, None)
        if bank is not None:
            bank.close()
