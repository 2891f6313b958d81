"""What a files restore says about the entries it kept, warned about and could not restore.

A user checks the target, so each is named by its place there (`restore --dry-run` names them the
same way); under --json each line carries both the snapshot's `path` and the `target` place (null
for a path a restore gave no place, which only a daemon that does not say where its target is
leaves), each exact as `ls` and `--dry-run` give names: text when UTF-8, else escaped text plus
`path_bytes` / `target_bytes` in base64 (docs/archive.md, "Names"). The restore records snapshot
paths (archive/restore_entries.py); archive/restore_places.py turns them into places.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from shadowvault.archive.restore_entries import RestoreStats
from shadowvault.archive.restore_places import entry_fields, entry_shown
from shadowvault.cli.output import note, print_json, warn


def report_entries(stats: RestoreStats, as_json: bool) -> None:
    """What was kept (by name under --json, else a count per reason), then the warnings and errors."""
    if as_json:
        for path, why in stats.kept:
            print_json({"message_type": "kept", **entry_fields(path, stats.place(path)), "reason": why})
    else:
        for why, count in Counter(why for _, why in stats.kept).items():
            note(f"{count} kept, {why}")
    for kind, entries in (("warning", stats.warnings), ("error", stats.errors)):
        for path, why in entries:
            if as_json:
                stderr_json({"message_type": kind, **entry_fields(path, stats.place(path)), "message": why})
            else:
                warn(f"{entry_shown(path, stats.place(path))}: {why}")


def stderr_json(obj: dict[str, str | None]) -> None:
    """One JSON line on stderr (a warning or an error about an entry), as json.dumps writes it."""
    sys.stderr.write(json.dumps(obj, separators=(",", ":")) + "\n")  # compact, as every other line
