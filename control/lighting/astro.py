"""The astronomical clock: switch-on and switch-off times of each night from astral's sun times.

A *night* is named by the date of its evening and runs from noon of that date to noon of the next
(TALQ's noon-to-noon day for night rules). Sun times come from astral 3.x (NOAA's equations).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from astral import Observer
from astral import sun as astral_sun

from control.lighting.config import AstroConfig, AstroTime

_EVENTS: dict[str, Callable[..., dt.datetime]] = {
    "sunset": astral_sun.sunset,
    "sunrise": astral_sun.sunrise,
    "dusk": astral_sun.dusk,
    "dawn": astral_sun.dawn,
}


def night_of(local: dt.datetime) -> dt.date:
    """The night a local time belongs to: before noon it is the previous evening's night."""
    return local.date() if local.hour >= 12 else local.date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class NightTimes:
    """Astro switch-on and switch-off times of one night (aware datetimes in the site's zone)."""

    night: dt.date
    on: dt.datetime
    off: dt.datetime


class AstroClock:
    """Computes each night's astro switching times (TALQ ``AstroClockTimeControl``), caching a few nights."""

    def __init__(self, lat: float, lon: float, tz: str, cfg: AstroConfig, elevation_m: float = 0.0) -> None:
        self.observer = Observer(latitude=lat, longitude=lon, elevation=elevation_m)
        self.tz = ZoneInfo(tz)
        self.cfg = cfg
        self._cache: OrderedDict[dt.date, NightTimes] = OrderedDict()

    def event(self, day: dt.date, when: AstroTime) -> dt.datetime:
        """The solar event of ``when`` on local date ``day``, plus its offset.

        Raises ``ValueError`` (from astral) when the sun does not reach the needed elevation that day.
        """
        fn = _EVENTS[when.event]
        return fn(self.observer, day, tzinfo=self.tz) + dt.timedelta(minutes=when.offset_min)

    def night(self, night: dt.date) -> NightTimes:
        """Switching times of the night that starts on the evening of ``night``."""
        hit = self._cache.get(night)
        if hit is not None:
            return hit
        times = NightTimes(
            night,
            self.event(night, self.cfg.switch_on),
            self.event(night + dt.timedelta(days=1), self.cfg.switch_off),
        )
        self._cache[night] = times
        while len(self._cache) > 8:
            self._cache.popitem(last=False)
        return times
