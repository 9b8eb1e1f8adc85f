"""Signal output on a SUMO traffic light over TraCI (the HIL rig; needs the dev extra).

The driver gets a TraCI connection (it starts no simulation itself). Each group maps to the link
indices of the light; the read-back is ``getRedYellowGreenState``, decoded per group, and a group
whose links disagree is an invalid read-back.

SUMO has no flashing DON'T WALK, and its pedestrians step onto a crossing whose link shows ``y``
as they would on green. A pedestrian group's clearance (``y``) is therefore written as ``u``
(red-yellow), which SUMO's pedestrians treat as red, and read back as ``y``: nobody starts to
cross, and the rig's monitor still sees when the clearance ends.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from drivers.signals.base import ShownState
from drivers.signals.indications import Indication, SignalState
from kernel.errors import DeviceError, FrameError

OFF_PROGRAM = "off"
PED_CLEARANCE = "u"  # SUMO's red-yellow: closed to pedestrians, distinct from steady red


class SumoSignals:
    """Writes whole state strings with setRedYellowGreenState and reads back what SUMO shows."""

    def __init__(
        self, conn: Any, tls_id: str, links: dict[str, list[int]], pedestrian: Collection[str] = ()
    ) -> None:
        self._conn = conn
        self.pedestrian = frozenset(pedestrian)
        self.tls_id = tls_id
        self.links = links
        self.groups = tuple(links)
        self._n = 1 + max(i for ls in links.values() for i in ls)

    def write(self, state: SignalState, seq: int) -> None:
        """Show ``state`` (``seq`` cannot be echoed by SUMO)."""
        chars = ["r"] * self._n
        for g, ind in state.items():
            letter = PED_CLEARANCE if ind == Indication.YELLOW and g in self.pedestrian else ind.value
            for i in self.links[g]:
                chars[i] = letter
        try:
            self._conn.trafficlight.setRedYellowGreenState(self.tls_id, "".join(chars))
        except Exception as exc:
            raise DeviceError(f"TraCI setRedYellowGreenState failed: {exc}") from exc

    def read_back(self) -> ShownState:
        """Decode the shown state string per group."""
        try:
            text = self._conn.trafficlight.getRedYellowGreenState(self.tls_id)
        except Exception as exc:
            raise DeviceError(f"TraCI getRedYellowGreenState failed: {exc}") from exc
        shown: dict[str, Indication] = {}
        for g, idx in self.links.items():
            letters = {text[i] for i in idx}
            if len(letters) != 1:
                raise FrameError(f"group {g} shows {sorted(letters)} on its links")
            letter = letters.pop()
            if letter == PED_CLEARANCE and g in self.pedestrian:
                letter = Indication.YELLOW.value
            try:
                shown[g] = Indication(letter)
            except ValueError as exc:
                raise FrameError(f"group {g}: unknown SUMO signal letter ({exc})") from exc
        return ShownState(shown, None)

    def flash(self) -> None:
        """SUMO's ``off`` program: vehicle links flash yellow (``o``), crosswalks go dark (``O``)."""
        self._conn.trafficlight.setProgram(self.tls_id, OFF_PROGRAM)

    def reset(self) -> None:
        """Nothing latches inside SUMO."""

    def close(self) -> None:
        """The rig owns the connection."""
