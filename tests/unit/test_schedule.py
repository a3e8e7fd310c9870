"""Cron schedules of continuous training (mlsys.monitor.schedule)."""

import calendar

import pytest

from mlsys.errors import ConfigError
from mlsys.monitor.schedule import Cron


def _t(text: str) -> float:
    return float(calendar.timegm(tuple(int(x) for x in text.replace("-", " ").replace(":", " ").split()) + (0, 0, 0)))


def test_fields_steps_ranges_and_lists():
    daily = Cron("0 3 * * *")
    assert daily.matches(_t("2026-12-03 03:00:30")) and not daily.matches(_t("2026-12-03 03:01:00"))
    every_15 = Cron("*/15 * * * *")
    assert [m for m in range(60) if every_15.matches(_t(f"2026-12-03 10:{m:02d}:00"))] == [0, 15, 30, 45]
    weekdays = Cron("30 9 * * 1-5")  # 2026-12-05 is a Saturday
    assert weekdays.matches(_t("2026-12-04 09:30:00")) and not weekdays.matches(_t("2026-12-05 09:30:00"))
    assert Cron("0 0 * * 7").matches(_t("2026-12-06 00:00:00"))  # Sunday as 7
    either = Cron("0 0 1 * 0")  # the 1st, or any Sunday (cron's rule when both day fields are set)
    assert either.matches(_t("2026-12-01 00:00:00")) and either.matches(_t("2026-12-06 00:00:00"))
    assert not either.matches(_t("2026-12-02 00:00:00"))
    assert Cron("5,10 1 * 12 *").matches(_t("2026-12-03 01:10:00"))


def test_due_fires_once_per_scheduled_minute_and_once_after_a_long_outage():
    hourly = Cron("0 * * * *")
    assert hourly.due(_t("2026-12-03 09:59:00"), _t("2026-12-03 10:00:10"))
    assert not hourly.due(_t("2026-12-03 10:00:10"), _t("2026-12-03 10:30:00"))  # already past that minute
    assert hourly.due(_t("2026-11-01 00:00:00"), _t("2026-12-03 10:30:00"))  # down a month: due, once


@pytest.mark.parametrize("expression", ["0 3 * *", "60 * * * *", "a * * * *", "*/0 * * * *", "5-1 * * * *"])
def test_a_bad_schedule_names_the_key(expression):
    with pytest.raises(ConfigError, match="monitor.retrain.schedule"):
        Cron(expression)
