"""Retention durations in restic's syntax (`2y5m7d3h`: years, months, days, hours) and the calendar
arithmetic restic does with them.

Years and months are calendar steps, as Go's `AddDate` takes them: a month before 31 March is
"31 February", which normalizes to 3 March. Hours are exact. `forget --keep-within` measures them
back from the newest snapshot of a group, not from now, so a host that stopped backing up does
not lose its last snapshots to the passing of time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from shadowvault.errors import UsageError

_WHOLE = re.compile(r"(?:\d+[ymdh])+")
_PART = re.compile(r"(\d+)([ymdh])")


@dataclass(frozen=True)
class Duration:
    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __str__(self) -> str:
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"

    def is_zero(self) -> bool:
        """`0d` and the like: restic takes such a rule as not given (it keeps nothing by itself)."""
        return not (self.years or self.months or self.days or self.hours)

    def before(self, t: float, *, utc: bool = False) -> float:
        """The time this long before `t` (seconds since the epoch), counted on the local calendar
        (the UTC one with `utc`); minus infinity when that lies before the calendar's year 1 (`9999y`
        keeps everything, as in restic, instead of failing)."""
        at = dt.datetime.fromtimestamp(t, dt.UTC) if utc else dt.datetime.fromtimestamp(t)
        months = at.year * 12 + at.month - 1 - self.years * 12 - self.months
        year, month = divmod(months, 12)
        try:
            first = at.replace(year=year, month=month + 1, day=1)
            shifted = first + dt.timedelta(days=at.day - 1 - self.days)  # days roll over, as in Go
            return shifted.timestamp() - self.hours * 3600
        except (ValueError, OverflowError):  # before year 1
            return float("-inf")


def parse_duration(text: str, option: str = "--keep-within") -> Duration:
    """A duration like 2y5m7d3h, 30d or 12h (UsageError naming `option` otherwise)."""
    cleaned = text.strip()
    if not _WHOLE.fullmatch(cleaned):
        raise UsageError(f"{option} takes a duration like 30d, 2y5m or 1y2m3d4h (y, m, d, h), not {text!r}")
    amounts = {"y": 0, "m": 0, "d": 0, "h": 0}
    for number, unit in _PART.findall(cleaned):
        amounts[unit] += int(number)
    return Duration(amounts["y"], amounts["m"], amounts["d"], amounts["h"])
