"""Signal indications and the state of an intersection (one indication per signal group)."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Indication(str, enum.Enum):
    """What one signal group shows. The letters follow SUMO's state strings where they exist.

    For a pedestrian group ``G`` is WALK, ``y`` is the flashing DON'T WALK clearance and ``r``
    is steady DON'T WALK.
    """

    RED = "r"
    YELLOW = "y"
    GREEN = "G"  # protected: no conflicting stream moves
    GREEN_YIELD = "g"  # permissive: moves but gives way to a permissive foe
    FLASH = "o"  # flashing yellow: proceed with caution (QCVN 41:2024 §6.3)
    DARK = "O"  # lamps off (pedestrian heads while the junction flashes)

    @property
    def is_green(self) -> bool:
        """G or g."""
        return self in (Indication.GREEN, Indication.GREEN_YIELD)

    @property
    def is_active(self) -> bool:
        """Lets traffic into (or still through) the conflict area: G, g or y."""
        return self in (Indication.GREEN, Indication.GREEN_YIELD, Indication.YELLOW)


SignalState = Mapping[str, Indication]


def format_state(state: SignalState) -> str:
    """``n_through=G s_left=r ...`` for logs and reports."""
    return " ".join(f"{name}={ind.value}" for name, ind in sorted(state.items()))


def parse_indication(value: str) -> Indication:
    """An indication from its letter or its name (``"G"``, ``"green"``)."""
    try:
        return Indication(value)
    except ValueError:
        try:
            return Indication[value.upper()]
        except KeyError:
            raise ValueError(f"{value!r} is not a signal indication (r, y, G, g, o, O)") from None
