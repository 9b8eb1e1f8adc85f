"""Device kind ``thermo``: a temperature and humidity probe that prints ``T=23.50 H=61.2`` lines.

The probe streams one ASCII line a second on its serial port; the period's mean of each value is
stored. Nothing in the agent or the HIL tools names this kind: its distribution declares it under
the ``kinhbac_edge.kinds`` entry points, and ``RIG`` tells rigs where its emulator is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from drivers.serial_sensors.config import SerialSensorConfig, check_own_ports
from drivers.serial_sensors.framing import FrameStats
from drivers.serial_sensors.source import SerialSensorSource, mean_readings
from drivers.transports.base import Transport
from kernel.kinds import RigSupport
from kernel.readings import Reading
from kernel.source import RunContext, Source

UNITS = {"temperature": "degC", "humidity": "%RH"}
MAX_LINE = 64  # a longer run of bytes without a newline is noise


class Config(SerialSensorConfig):
    """A thermo probe on its own serial port."""

    driver: Literal["thermo"]


class LineFramer:
    """Splits the byte stream into ``T=<degC> H=<%RH>`` lines; a line that does not parse is malformed."""

    def __init__(self) -> None:
        self.stats = FrameStats()
        self._buf = b""

    def feed(self, data: bytes) -> list[dict[str, float]]:
        """Add bytes; return the readings of the lines they complete."""
        *lines, rest = (self._buf + data).split(b"\n")
        if len(rest) > MAX_LINE:
            self.stats.garbage_bytes += len(rest)
            rest = b""
        self._buf = rest
        out = []
        for line in lines:
            try:
                fields = dict(part.split("=", 1) for part in line.decode("ascii").split())
                out.append({"temperature": float(fields["T"]), "humidity": float(fields["H"])})
            except (UnicodeDecodeError, ValueError, KeyError):
                self.stats.malformed += 1
                continue
            self.stats.frames += 1
        return out


class ThermoSource(SerialSensorSource):
    """Acquisition from one thermo probe: the mean of each value over the period."""

    cfg: Config

    def __init__(self, cfg: Config, transport: Transport | None = None) -> None:
        super().__init__(cfg, transport)
        self._sums = dict.fromkeys(UNITS, 0.0)
        self._count = 0

    def make_framer(self) -> LineFramer:
        """A fresh line framer."""
        return LineFramer()

    def on_frame(self, frame: Any, ctx: RunContext) -> list[Reading]:
        """Accumulate one line's values."""
        for point, value in frame.items():
            self._sums[point] += value
        self._count += 1
        return []

    async def on_period(self, transport: Transport, ctx: RunContext) -> list[Reading]:
        """The period's means."""
        out = mean_readings(self.name, self._sums, self._count, UNITS, ctx, digits=2)
        self._sums, self._count = dict.fromkeys(UNITS, 0.0), 0
        return out


def build_sources(configs: Sequence[Config], ctx: RunContext) -> list[Source]:
    """One source per probe (each has its own port)."""
    check_own_ports("thermo", configs)
    return [ThermoSource(c) for c in configs if c.enabled]


# For HIL rigs: the emulator beside this driver and the probe's rated ranges.
RIG = RigSupport(
    emulator="kbe_thermo.emulator:ThermoEmulator",
    ranges={"temperature": (-40.0, 85.0), "humidity": (0.0, 100.0)},
)
