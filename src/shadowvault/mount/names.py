"""Names in the mounted view: a snapshot's directory name, short ids, and host and tag names made safe.

Hosts and tags come from the repository and may hold anything; a directory entry must be one path
component, so a name that is not is made into one (and two that collide get the snapshot's id).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

SHORT_ID = 8  # hex digits, as `snapshots` shows them; longer only where two ids share a prefix


def short_ids(snapshot_ids: Iterable[str]) -> dict[str, str]:
    """Each id's shortest prefix of at least SHORT_ID digits that no other id shares."""
    ids = sorted(set(snapshot_ids))
    found: dict[str, str] = {}
    for i, snapshot_id in enumerate(ids):
        length = SHORT_ID
        for neighbour in (ids[i - 1] if i else "", ids[i + 1] if i + 1 < len(ids) else ""):
            while length < len(snapshot_id) and neighbour[:length] == snapshot_id[:length]:
                length += 1
        found[snapshot_id] = snapshot_id[:length]
    return found


def snapshot_name(when: float, short_id: str) -> str:
    """A snapshot's directory: its time in UTC, then its short id (sorts by time, never collides)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) + "_" + short_id


def entry_name(text: str) -> str:
    """`text` as one directory entry name: '/' and NUL become '_'; '', '.', '..' and 'latest' get a '_'
    in front ('latest' is the link to the newest snapshot in every directory of snapshots)."""
    name = text.replace("/", "_").replace("\0", "_")
    if name in ("", ".", "..", "latest"):
        name = "_" + name
    return name
