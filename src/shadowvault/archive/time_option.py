"""Times typed on the command line, in restic's forms and local time: `backup --time` (the time a
snapshot records instead of now, for importing old data), "YYYY-MM-DD HH:MM:SS"; `find --oldest` and
`--newest`, that or a shorter "YYYY-MM-DD HH:MM" or "YYYY-MM-DD". Anything else is one line naming
the option.
"""

from __future__ import annotations

import datetime

from shadowvault.errors import UsageError
from shadowvault.repo.snapshot import EARLIEST_TIME, LATEST_TIME

FORMAT = "%Y-%m-%d %H:%M:%S"
FIND_FORMATS = (FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")  # restic find's


def parse_backup_time(text: str, option: str = "--time") -> float:
    """Seconds since the epoch for a local "YYYY-MM-DD HH:MM:SS" (UsageError naming `option` else)."""
    try:
        local = datetime.datetime.strptime(text.strip(), FORMAT)
        at = local.astimezone().timestamp()  # a naive time is the machine's local time
    except (ValueError, OverflowError, OSError) as err:
        raise UsageError(
            f"{option} takes a local time like '2021-03-04 15:30:00' (YYYY-MM-DD HH:MM:SS), not {text!r}"
        ) from err
    if not EARLIEST_TIME <= at <= LATEST_TIME:  # a snapshot could not record it (and would not decode)
        raise UsageError(f"{option} {text.strip()!r} lies outside the years a snapshot records (0001-9999)")
    return at


def parse_find_time(text: str, option: str) -> float:
    """Seconds since the epoch for a local time in one of FIND_FORMATS (a date alone: its midnight)."""
    for form in FIND_FORMATS:
        try:
            return datetime.datetime.strptime(text.strip(), form).astimezone().timestamp()
        except ValueError:
            continue
        except (OverflowError, OSError):
            break
    raise UsageError(
        f"{option} takes a local time like '2021-03-04 15:30:00', '2021-03-04 15:30' or '2021-03-04',"
        f" not {text!r}"
    )
