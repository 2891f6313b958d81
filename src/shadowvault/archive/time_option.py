"""`backup --time`: the time a snapshot records instead of now (restic's option, for importing old data).

restic's form, "YYYY-MM-DD HH:MM:SS" in local time (Go's "2006-01-02 15:04:05"); anything else is
one line naming the option.
"""

from __future__ import annotations

import datetime

from shadowvault.errors import UsageError

FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_backup_time(text: str, option: str = "--time") -> float:
    """Seconds since the epoch for a local "YYYY-MM-DD HH:MM:SS" (UsageError naming `option` else)."""
    try:
        local = datetime.datetime.strptime(text.strip(), FORMAT)
        return local.astimezone().timestamp()  # a naive time is the machine's local time
    except (ValueError, OverflowError, OSError) as err:
        raise UsageError(
            f"{option} takes a local time like '2021-03-04 15:30:00' (YYYY-MM-DD HH:MM:SS), not {text!r}"
        ) from err
