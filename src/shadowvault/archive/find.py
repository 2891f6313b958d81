"""`find`: entries whose name (or, for a pattern with a `/`, whose full path) matches a glob, across
snapshots.

A pattern without `/` is matched against each entry's name (`*.conf`, `hello.txt`); a pattern with
one against the entry's whole snapshot path, with the glob rules of include/exclude patterns
(archive/patterns.py: `*` stays within one component, `**` crosses directories; a pattern that does
not start with `/` may match at any depth). Matching is on the exact bytes of names (undecodable
bytes survive as surrogates); `ignore_case` folds case first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shadowvault.archive.listing import walk_tree
from shadowvault.archive.patterns import glob_regex, path_text
from shadowvault.archive.tree_paths import TreeReader
from shadowvault.errors import UsageError
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node


@dataclass(frozen=True)
class Match:
    snapshot_id: str
    snapshot: Snapshot
    path: bytes
    node: Node


class Patterns:
    """Compiled find patterns: one matches an entry when it matches its name or its full path."""

    def __init__(self, patterns: Iterable[str], *, ignore_case: bool = False) -> None:
        flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        self._names: list[re.Pattern[str]] = []
        self._paths: list[re.Pattern[str]] = []
        for pattern in patterns:
            if not pattern.strip("/"):
                raise UsageError(f"find pattern {pattern!r} matches nothing: give a name or a glob")
            body = pattern.rstrip("/")
            anchor = "^" if body.startswith("/") else "(?:^|/)"
            try:
                if "/" in body:
                    self._paths.append(re.compile(anchor + glob_regex(body) + "$", flags))
                else:
                    self._names.append(re.compile("^" + glob_regex(body) + "$", flags))
            except re.error as err:
                raise UsageError(f"invalid pattern {pattern!r}: {err.msg}") from err  # err.pos: in our regex
        if not self._names and not self._paths:
            raise UsageError("give at least one pattern")

    def match(self, path: bytes, name: bytes) -> bool:
        if any(rx.match(path_text(name)) for rx in self._names):
            return True
        return bool(self._paths) and any(rx.search(path_text(path)) for rx in self._paths)


def find_entries(
    store: TreeReader, snapshots: Iterable[tuple[str, Snapshot]], patterns: Patterns
) -> Iterator[Match]:
    """Every entry of every snapshot that a pattern matches, snapshot by snapshot, depth first."""
    for snapshot_id, snapshot in snapshots:
        for path, node in walk_tree(store, snapshot.tree or None, b"/"):
            if patterns.match(path, node.name):
                yield Match(snapshot_id, snapshot, path, node)
