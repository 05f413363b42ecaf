"""Cron schedules: parsing (fields, names, ranges, steps, descriptors) and next/most recent
times, against what robfig/cron (upstream's parser) answers."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from k8py.server.controllers import cron

UTC = datetime.timezone.utc


def at(text: str, zone: datetime.tzinfo = UTC) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=zone)


def test_fields_ranges_steps_lists():
    schedule = cron.parse("*/15 9-17/4 1,15 * *")
    assert schedule.minutes == {0, 15, 30, 45}
    assert schedule.hours == {9, 13, 17}
    assert schedule.days == {1, 15}
    assert schedule.months == set(range(1, 13))
    assert schedule.weekdays == set(range(7))
    assert not schedule.any_day and schedule.any_weekday


def test_n_slash_step_runs_to_the_end():
    assert cron.parse("50/5 * * * *").minutes == {50, 55}


def test_names_are_case_insensitive():
    schedule = cron.parse("0 0 * jan-MAR,Dec mon-fri")
    assert schedule.months == {1, 2, 3, 12}
    assert schedule.weekdays == {1, 2, 3, 4, 5}


def test_question_mark_is_a_star():
    schedule = cron.parse("0 0 ? * ?")
    assert schedule.any_day and schedule.any_weekday


@pytest.mark.parametrize("descriptor, fields", [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
])
def test_descriptors(descriptor, fields):
    assert cron.parse(descriptor) == cron.parse(fields)


def test_every():
    assert cron.parse("@every 1h30m").every == 5400
    assert cron.parse("@every 90s").every == 90
    assert cron.parse("@every 1500ms").every == 1
    start = at("2024-05-01T10:00:00.5")
    assert cron.next_after(cron.parse("@every 90s"), start) == at("2024-05-01T10:01:30")


@pytest.mark.parametrize("text", [
    "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
    "* * * * 7", "5-1 * * * *", "*/0 * * * *", "x * * * *", "@often", "@every soon",
    "* * * foo *",
])
def test_invalid(text):
    with pytest.raises(cron.ScheduleError):
        cron.parse(text)


def test_next_every_minute_is_the_next_whole_minute():
    schedule = cron.parse("* * * * *")
    assert cron.next_after(schedule, at("2024-05-01T10:00:00")) == at("2024-05-01T10:01:00")
    assert cron.next_after(schedule, at("2024-05-01T10:00:59.9")) == at("2024-05-01T10:01:00")


def test_next_rolls_over_hours_days_months_years():
    schedule = cron.parse("30 2 * * *")
    assert cron.next_after(schedule, at("2024-12-31T03:00:00")) == at("2025-01-01T02:30:00")
    assert cron.next_after(cron.parse("@monthly"), at("2024-01-31T12:00:00")) == \
        at("2024-02-01T00:00:00")
    assert cron.next_after(cron.parse("0 0 29 2 *"), at("2024-03-01T00:00:00")) == \
        at("2028-02-29T00:00:00")


def test_impossible_date_has_no_next():
    assert cron.next_after(cron.parse("0 0 30 2 *"), at("2024-01-01T00:00:00")) is None


def test_day_of_month_or_day_of_week_when_both_restricted():
    # the 13th, or any Friday
    schedule = cron.parse("0 0 13 * 5")
    assert cron.next_after(schedule, at("2024-09-01T00:00:00")) == at("2024-09-06T00:00:00")
    assert cron.next_after(schedule, at("2024-09-10T00:00:00")) == at("2024-09-13T00:00:00")
    # a star day of month: only Fridays
    schedule = cron.parse("0 0 * * 5")
    assert cron.next_after(schedule, at("2024-09-07T00:00:00")) == at("2024-09-13T00:00:00")
    # `*/2` is restricted (as in robfig/cron): odd days or Sundays
    schedule = cron.parse("0 0 */2 * 0")
    assert cron.next_after(schedule, at("2024-09-01T00:00:00")) == at("2024-09-03T00:00:00")


def test_time_zone_wall_clock():
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    schedule = cron.parse("0 9 * * *")
    result = cron.next_after(schedule, at("2024-07-01T12:00:00"), berlin)
    assert result == at("2024-07-02T07:00:00")  # 09:00 CEST


def test_dst_gap_is_skipped_and_fallback_fires_once():
    new_york = zoneinfo.ZoneInfo("America/New_York")
    schedule = cron.parse("30 2 * * *")
    # 2024-03-10 02:30 does not exist in New York
    result = cron.next_after(schedule, at("2024-03-10T00:00:00", new_york), new_york)
    assert result.replace(tzinfo=None) == datetime.datetime(2024, 3, 11, 2, 30)
    schedule = cron.parse("30 1 * * *")
    first = cron.next_after(schedule, at("2024-11-03T00:00:00", new_york), new_york)
    second = cron.next_after(schedule, first, new_york)
    assert first.replace(tzinfo=None) == datetime.datetime(2024, 11, 3, 1, 30)
    assert second.replace(tzinfo=None) == datetime.datetime(2024, 11, 4, 1, 30)


def test_most_recent():
    schedule = cron.parse("*/10 * * * *")
    latest, missed = cron.most_recent(schedule, at("2024-05-01T10:00:00"),
                                      at("2024-05-01T10:35:00"))
    assert latest == at("2024-05-01T10:30:00") and missed == 3
    latest, missed = cron.most_recent(schedule, at("2024-05-01T10:00:00"),
                                      at("2024-05-01T10:05:00"))
    assert latest is None and missed == 0


def test_most_recent_after_many_missed_starts():
    schedule = cron.parse("* * * * *")
    latest, missed = cron.most_recent(schedule, at("2023-05-01T10:00:00"),
                                      at("2024-05-01T10:35:30"))
    assert latest == at("2024-05-01T10:35:00") and missed > 100
    schedule = cron.parse("0 0 1 1 *")
    latest, missed = cron.most_recent(cron.parse("0 * * * *"), at("2020-01-01T00:00:00"),
                                      at("2024-05-01T10:35:30"))
    assert latest == at("2024-05-01T10:00:00") and missed > 100
    latest, _ = cron.most_recent(schedule, at("2020-01-01T00:00:00"), at("2024-05-01T10:35:30"))
    assert latest == at("2024-01-01T00:00:00")
