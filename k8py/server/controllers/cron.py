"""Cron schedules as CronJobs spell them, and the times they name. Pure functions, no clock.

The grammar is upstream's (robfig/cron's `ParseStandard`, which the CronJob controller and
validation use):
- five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC),
  day of week (0-6 or SUN-SAT; 7 is out of range, as upstream);
- each field a comma list of `*`, `?` (same as `*`), `N`, `N-M`, each optionally `/step`;
  `N/step` means `N-max/step`; names are case-insensitive;
- descriptors `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`,
  and `@every <duration>` (Go duration: `1h30m`, `90s`), which upstream accepts as well.

Day of month and day of week combine as in cron: if either is unrestricted (a plain `*` or
`?`; `*/2` counts as restricted, as in robfig/cron) both must match, otherwise either may.

Times are computed on the wall clock of a time zone (`zoneinfo`): a wall time that a DST
jump skips never fires; one that a DST fallback repeats fires once, at its first occurrence.
"""

from __future__ import annotations

import dataclasses
import datetime
import re

MONTHS = {name: i + 1 for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (name, low, high, names)
FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
          ("month", 1, 12, MONTHS), ("day of week", 0, 6, DAYS))
SEARCH_YEARS = 5  # a schedule that names no real day (Feb 30) is given up on after this
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
                  "ns": 1e-9}


class ScheduleError(ValueError):
    """An unparseable schedule; the message reads like upstream's."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Either five sets of allowed values, or a constant delay (`@every`)."""
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = True       # day of month is a plain `*`
    any_weekday: bool = True   # day of week is a plain `*`
    every: float | None = None  # seconds, for `@every`


def parse(text: str) -> Schedule:
    text = text.strip()
    if not text:
        raise ScheduleError("empty spec string")
    if text.startswith("@"):
        if text.startswith("@every "):
            return Schedule(every=_parse_every(text[len("@every "):].strip()))
        if text.lower() not in DESCRIPTORS:
            raise ScheduleError(f"unrecognized descriptor: {text}")
        text = DESCRIPTORS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(parts)}: {text}")
    sets, stars = [], []
    for part, (name, low, high, names) in zip(parts, FIELDS):
        values, star = _parse_field(part, name, low, high, names)
        sets.append(frozenset(values))
        stars.append(star)
    return Schedule(*sets, any_day=stars[2], any_weekday=stars[4])


def _parse_field(text: str, name: str, low: int, high: int,
                 names: dict[str, int]) -> tuple[set[int], bool]:
    values: set[int] = set()
    star = False
    for item in text.split(","):
        range_text, slash, step_text = item.partition("/")
        if range_text in ("*", "?"):
            start, end = low, high
            star_item = True
        else:
            star_item = False
            first, dash, last = range_text.partition("-")
            start = _value(first, name, names)
            end = _value(last, name, names) if dash else start
            if slash and not dash:
                end = high  # `N/step` runs to the end of the range
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"failed to parse int from {step_text}: {item}")
            step = int(step_text)
            if step > 1:
                star_item = False
        if start < low:
            raise ScheduleError(f"beginning of range ({start}) below minimum ({low}): {item}")
        if end > high:
            raise ScheduleError(f"end of range ({end}) above maximum ({high}): {item}")
        if start > end:
            raise ScheduleError(f"beginning of range ({start}) beyond end of range ({end}): "
                                f"{item}")
        values.update(range(start, end + 1, step))
        star = star or star_item
    return values, star


def _value(text: str, name: str, names: dict[str, int]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise ScheduleError(f"failed to parse int from {text}: invalid {name}")
    return int(text)


def _parse_every(text: str) -> float:
    if not re.fullmatch(r"(\d+(\.\d+)?(h|ms|m|s|us|µs|ns))+", text):
        raise ScheduleError(f"failed to parse duration @every {text}: time: invalid duration "
                            f'"{text}"')
    seconds = sum(float(number) * DURATION_UNITS[unit]
                  for number, _, unit in re.findall(r"(\d+(\.\d+)?)(h|ms|m|s|us|µs|ns)", text))
    # robfig/cron rounds down to whole seconds, and never less than one
    return float(max(1, int(seconds)))


def _day_matches(schedule: Schedule, moment: datetime.datetime) -> bool:
    day = moment.day in schedule.days
    # Python counts Monday as 0; cron counts Sunday as 0
    weekday = (moment.weekday() + 1) % 7 in schedule.weekdays
    if schedule.any_day or schedule.any_weekday:
        return day and weekday
    return day or weekday


def next_after(schedule: Schedule, after: datetime.datetime,
               zone: datetime.tzinfo = datetime.timezone.utc) -> datetime.datetime | None:
    """The first time strictly after `after` (an aware datetime) that `schedule` names, in
    `zone`; None if there is none within `SEARCH_YEARS`."""
    if schedule.every is not None:
        whole = after.replace(microsecond=0)
        return whole + datetime.timedelta(seconds=schedule.every)
    local = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    wall = local + datetime.timedelta(minutes=1)
    limit = wall.year + SEARCH_YEARS
    while wall.year <= limit:
        if wall.month not in schedule.months:
            year, month = (wall.year + 1, 1) if wall.month == 12 else (wall.year, wall.month + 1)
            wall = datetime.datetime(year, month, 1)
            continue
        if not _day_matches(schedule, wall):
            wall = datetime.datetime(wall.year, wall.month, wall.day) + datetime.timedelta(days=1)
            continue
        if wall.hour not in schedule.hours:
            wall = wall.replace(minute=0) + datetime.timedelta(hours=1)
            continue
        if wall.minute not in schedule.minutes:
            wall += datetime.timedelta(minutes=1)
            continue
        moment = wall.replace(tzinfo=zone, fold=0)
        # a wall time skipped by a DST jump does not survive the round trip through UTC
        exists = moment.astimezone(datetime.timezone.utc).astimezone(zone).replace(
            tzinfo=None) == wall
        if exists and moment > after:
            return moment
        wall += datetime.timedelta(minutes=1)
    return None


def most_recent(schedule: Schedule, earliest: datetime.datetime, now: datetime.datetime,
                zone: datetime.tzinfo = datetime.timezone.utc,
                ) -> tuple[datetime.datetime | None, int]:
    """The latest scheduled time in (earliest, now], and how many there were; counting stops
    past 100 (upstream reports "too many missed start times" beyond that)."""
    latest, missed = None, 0
    moment = next_after(schedule, earliest, zone)
    while moment is not None and moment <= now:
        latest, missed = moment, missed + 1
        if missed > 100:
            return _latest_in_window(schedule, max(earliest, moment), now, zone), missed
        moment = next_after(schedule, moment, zone)
    return latest, missed


def _latest_in_window(schedule: Schedule, earliest: datetime.datetime,
                      now: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime:
    """The last time in (earliest, now], knowing there is one: look back over growing
    windows instead of walking every missed minute since `earliest`."""
    for days in (1 / 24, 1, 32, 367):
        start = max(earliest, now - datetime.timedelta(days=days))
        latest = None
        moment = next_after(schedule, start, zone)
        while moment is not None and moment <= now:
            latest = moment
            moment = next_after(schedule, moment, zone)
        if latest is not None:
            return latest
    latest = earliest
    moment = next_after(schedule, earliest, zone)
    while moment is not None and moment <= now:
        latest = moment
        moment = next_after(schedule, moment, zone)
    return latest
