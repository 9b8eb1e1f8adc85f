"""An independent sunrise/sunset reference: the algorithm of the *Almanac for Computers* (1990,
Nautical Almanac Office, U.S. Naval Observatory), widely reproduced as the "sunrise/sunset
algorithm" (zenith 90 deg 50': refraction plus the sun's radius). It uses different, simpler equations
than astral (which follows NOAA's Meeus-based spreadsheet) and is good to about one or two minutes
at low latitudes. Written here from the published steps; used only by tests.
"""

from __future__ import annotations

import datetime as dt
import math

ZENITH = 90.0 + 50.0 / 60.0


def _sin(d: float) -> float:
    return math.sin(math.radians(d))


def _cos(d: float) -> float:
    return math.cos(math.radians(d))


def almanac_sun_time(day: dt.date, lat: float, lon: float, rising: bool) -> dt.datetime:
    """Sunrise (``rising``) or sunset on ``day`` as an aware UTC datetime."""
    n = day.timetuple().tm_yday
    lng_hour = lon / 15.0
    t = n + ((6.0 if rising else 18.0) - lng_hour) / 24.0
    m = 0.9856 * t - 3.289
    sun_long = (m + 1.916 * _sin(m) + 0.020 * _sin(2 * m) + 282.634) % 360.0
    ra = math.degrees(math.atan(0.91764 * math.tan(math.radians(sun_long)))) % 360.0
    ra += (math.floor(sun_long / 90.0) * 90.0) - (math.floor(ra / 90.0) * 90.0)
    ra /= 15.0
    sin_dec = 0.39782 * _sin(sun_long)
    cos_dec = math.cos(math.asin(sin_dec))
    cos_h = (_cos(ZENITH) - sin_dec * _sin(lat)) / (cos_dec * _cos(lat))
    h = math.degrees(math.acos(cos_h))
    h = (360.0 - h if rising else h) / 15.0
    local_mean = h + ra - 0.06571 * t - 6.622
    ut = (local_mean - lng_hour) % 24.0
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    out = midnight + dt.timedelta(hours=ut)
    # East of Greenwich a morning event in local time can fall on the previous UTC day.
    if rising and lon > 0 and out.hour > 12:
        out -= dt.timedelta(days=1)
    return out
