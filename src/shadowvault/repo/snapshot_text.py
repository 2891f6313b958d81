"""What a snapshot document can hold as text: msgpack strings are UTF-8, and a file name need not be.

A command line hands us undecodable bytes as surrogate escapes (os.fsdecode). The fields that name
the snapshot (its paths, host, tags, ...) are matched later by what a user types, so one that is not
UTF-8 is refused in one line before anything is written; the records a snapshot keeps for people
(the --exclude patterns, the summary's paths and messages) keep such bytes as \\xNN text. Without
this, saving such a snapshot ended in "internal error: UnicodeEncodeError" (docs/archive.md, "Names").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from shadowvault.display import display_name, is_utf8, readable_text
from shadowvault.errors import UsageError
from shadowvault.repo.snapshot import Snapshot


def require_text(what: str, values: Iterable[str | None]) -> None:
    """Refuse (one line, exit 2) a value of a snapshot's naming field that is not UTF-8."""
    for value in values:
        if value is not None and not is_utf8(value):
            shown = display_name(value.encode("utf-8", "surrogateescape"))
            raise UsageError(f"{what} {shown} is not UTF-8: a snapshot records it as text (name a UTF-8 one)")


def _recorded(value: Any) -> Any:
    if isinstance(value, str):
        return readable_text(value)
    if isinstance(value, list | tuple):
        return [_recorded(item) for item in value]
    if isinstance(value, dict):
        return {_recorded(key): _recorded(item) for key, item in value.items()}
    return value


def storable(snapshot: Snapshot) -> Snapshot:
    """The snapshot as its document can be written: naming fields checked (`require_text`), the
    records for people (`excludes`, `summary`) with undecodable bytes as \\xNN text."""
    require_text("path", snapshot.paths)
    require_text("host", [snapshot.host])
    require_text("user", [snapshot.username])
    require_text("tag", snapshot.tags)
    require_text("component", [*snapshot.components, *snapshot.consistency, *snapshot.consistency.values()])
    require_text("snapshot id", [snapshot.parent, snapshot.original, snapshot.program_version])
    return msgspec.structs.replace(
        snapshot, excludes=_recorded(snapshot.excludes), summary=_recorded(snapshot.summary)
    )
