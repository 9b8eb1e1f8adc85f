"""Calendar rules: which nights use another profile (holidays, Tết), with noon-to-noon nights.

Tết and Vietnam's public holidays come from the ``holidays`` package (PyPI), whose Vietnamese
lunisolar calendar is computed for UTC+7, so years where Tết differs from the Chinese New Year
(2030: 2 February in Vietnam, 3 February in China) come out right.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from control.lighting.config import CalendarRule


@lru_cache(maxsize=16)
def _vn_holidays(year: int) -> dict[dt.date, str]:
    import holidays  # imported on first use: it is large, and most CLI commands never need it

    return dict(holidays.country_holidays("VN", years=year, language="en_US").items())


def lunar_new_year(year: int) -> dt.date:
    """Mùng 1 Tết (first day of the first lunar month, Vietnamese calendar) in Gregorian ``year``."""
    for day, name in _vn_holidays(year).items():
        if name == "Lunar New Year":
            return day
    raise LookupError(f"no Lunar New Year date known for {year}")


def public_holidays(year: int) -> list[dt.date]:
    """Vietnam's official public holidays (days off) in ``year``."""
    return sorted(_vn_holidays(year))


def _anchors(rule: CalendarRule, year: int) -> list[dt.date]:
    out = [d for d in rule.dates if d.year == year]
    for md in rule.annual:
        out.append(
            dt.date.fromisoformat(f"{year}-{md}") if md != "02-29" or _leap(year) else dt.date(year, 3, 1)
        )
    if rule.lunar_new_year:
        out.append(lunar_new_year(year))
    if rule.public_holidays:
        out.extend(public_holidays(year))
    return out


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def rule_covers(rule: CalendarRule, night: dt.date) -> bool:
    """Whether ``rule`` selects the night that starts on the evening of ``night``."""
    # An anchor in the neighbouring year can reach this night through day_offset + nights.
    for year in (night.year - 1, night.year, night.year + 1):
        for anchor in _anchors(rule, year):
            first = anchor + dt.timedelta(days=rule.day_offset)
            if first <= night < first + dt.timedelta(days=rule.nights):
                return True
    return False


def rule_for_night(rules: list[CalendarRule], night: dt.date) -> CalendarRule | None:
    """The highest-priority rule covering ``night`` (the first listed wins a tie), or None."""
    best: CalendarRule | None = None
    for rule in rules:
        if rule_covers(rule, night) and (best is None or rule.priority > best.priority):
            best = rule
    return best
