"""Time-of-day and calendar schedule: which plan and mode run at a given local time."""

from __future__ import annotations

import datetime as dt

from control.traffic.config import WEEKDAYS, ScheduleConfig, ScheduleEntry


def day_type(schedule: ScheduleConfig, day: dt.date) -> str:
    """The day type of ``day``: a calendar entry (holiday, Tết) first, then the weekday lists."""
    for c in schedule.calendar:
        if c.date == day:
            return c.day_type
    wd = WEEKDAYS[day.weekday()]
    for name, days in schedule.day_types.items():
        if wd in days:
            return name
    return "all"


def active_entry(schedule: ScheduleConfig, when: dt.datetime) -> ScheduleEntry:
    """The entry in force at local time ``when``; before today's first entry, yesterday's last one runs."""
    for day, cutoff in ((when.date(), when.time()), (when.date() - dt.timedelta(days=1), dt.time.max)):
        kind = day_type(schedule, day)
        todays = sorted(
            (e for e in schedule.entries if e.day_type in (kind, "all") and e.start <= cutoff),
            key=lambda e: e.start,
        )
        if todays:
            return todays[-1]
    return sorted(schedule.entries, key=lambda e: e.start)[-1]
