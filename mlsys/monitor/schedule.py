"""Cron schedules (the five standard fields), plain Python: ``Cron("0 3 * * *").due(last, now)``.

Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12), day of week (0-6, Sunday 0;
7 is Sunday too). Each field is ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a
comma list of those. As in cron, when both day fields are restricted, either matching is enough.
Times are UTC.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from mlsys.config import require

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


def _parse(text: str, name: str, low: int, high: int, key: str, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                start, end = (int(x) for x in body.split("-", 1))
            else:
                start = end = int(body)
                if step_text:
                    end = high
        except ValueError:
            start, end, step = -1, -1, 0
        require(step >= 1 and low <= start <= end <= high, key, expression,
                f"a cron expression whose {name} field ({text!r}) is *, N, A-B, */N or a list of those, within {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    expression: str
    key: str = "monitor.retrain.schedule"

    def __post_init__(self):
        fields = self.expression.split()
        require(len(fields) == 5, self.key, self.expression, "five cron fields: minute hour day-of-month month day-of-week")
        parsed = [_parse(f, name, low, high, self.key, self.expression) for f, (name, low, high) in zip(fields, _FIELDS)]
        dow = frozenset(d % 7 for d in parsed[4])
        object.__setattr__(self, "_sets", (*parsed[:4], dow))
        object.__setattr__(self, "_any_day", (fields[2] == "*", fields[4] == "*"))

    def matches(self, t: float) -> bool:
        """Whether the minute holding ``t`` (UTC) is on the schedule."""
        minute, hour, dom, month, dow = self._sets  # type: ignore[attr-defined]
        tm = time.gmtime(t)
        if tm.tm_min not in minute or tm.tm_hour not in hour or tm.tm_mon not in month:
            return False
        any_dom, any_dow = self._any_day  # type: ignore[attr-defined]
        day_ok, week_ok = tm.tm_mday in dom, (tm.tm_wday + 1) % 7 in dow
        if any_dom or any_dow:
            return day_ok and week_ok
        return day_ok or week_ok

    def due(self, last: float, now: float) -> bool:
        """Whether a scheduled minute started in ``(last, now]`` (looking back one day at most: a
        monitor that was down longer runs once, not once per missed minute)."""
        first = max(math.floor(last / 60) + 1, math.floor(now / 60) - 24 * 60)
        return any(self.matches(m * 60) for m in range(first, math.floor(now / 60) + 1))
