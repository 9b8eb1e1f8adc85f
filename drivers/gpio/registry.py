"""Where controllers find the running GPIO banks, by device name (filled by ``build_sources``)."""

from __future__ import annotations

from drivers.gpio.bank import GpioBank
from kernel.errors import DeviceError

_BANKS: dict[str, GpioBank] = {}


def register(bank: GpioBank) -> None:
    """Make ``bank`` reachable by its device name (replacing an older bank of that name)."""
    old = _BANKS.get(bank.device)
    if old is not None and old is not bank:
        old.close()
    _BANKS[bank.device] = bank


def get_bank(device: str) -> GpioBank:
    """The bank of gpio device ``device``; :class:`DeviceError` naming the known ones otherwise."""
    try:
        return _BANKS[device]
    except KeyError:
        raise DeviceError(f"no gpio device {device!r} (have {', '.join(sorted(_BANKS)) or 'none'})") from None


def unregister(device: str) -> None:
    """Forget (and close) the bank of ``device``."""
    bank = _BANKS.pop(device, None)
    if bank is not None:
        bank.close()
