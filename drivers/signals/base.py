"""The contract every signal output meets; the safety envelope is its only caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from drivers.signals.indications import Indication, SignalState

# Register codes shared by the Modbus controller and its emulator.
CODES: dict[Indication, int] = {
    Indication.DARK: 0,
    Indication.RED: 1,
    Indication.YELLOW: 2,
    Indication.GREEN: 3,
    Indication.GREEN_YIELD: 4,
    Indication.FLASH: 5,
}
FROM_CODE: dict[int, Indication] = {v: k for k, v in CODES.items()}


@dataclass(frozen=True)
class ShownState:
    """What the output reports it actually shows.

    ``seq`` echoes the sequence number of the last command the device applied (None when the
    device cannot echo one); ``fault`` is set when the device's own monitor has tripped to flash;
    ``calls`` are the controller's pedestrian push-button inputs pressed since the last read-back.
    """

    indications: dict[str, Indication]
    seq: int | None
    fault: str | None = None
    calls: tuple[int, ...] = ()


class SignalOutput(Protocol):
    """A signal output: writes whole states, reads back what is shown, flashes on demand."""

    groups: tuple[str, ...]

    def write(self, state: SignalState, seq: int) -> None:
        """Show ``state`` (one indication per group); ``seq`` is echoed by the read-back."""
        ...

    def read_back(self) -> ShownState:
        """The state actually shown (lamp sense or controller status), not the state written."""
        ...

    def flash(self) -> None:
        """Switch to flashing yellow (pedestrian heads dark) now."""
        ...

    def reset(self) -> None:
        """Operator reset of a latched device fault; the device comes back all red."""
        ...

    def close(self) -> None:
        """Release the output (the device's own watchdog then flashes it)."""
        ...
