"""Which snapshot a command line names: an id, a unique prefix or "latest", narrowed by --path, --host
and --tag (restic's snapshot filter).

"latest" is the newest snapshot that passes the filter. When the command also names a path inside
the snapshot (`restore latest:/srv/www`, `ls latest /srv/www`, `dump latest /srv/www/index.html`),
"latest" prefers the newest snapshot whose backed-up paths hold that path (a path equal to it, above
it or below it): a later backup of another path does not hide it. When no snapshot holds the path,
"latest" stays the newest that passes the filter (and the command then says the path is not in it).
A snapshot named by id must pass the filter too: a mismatch is an error, never a silent substitute.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from shadowvault.errors import NotFoundError, UsageError
from shadowvault.paths_within import is_within
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot, chronological
from shadowvault.repo.snapshots import filter_snapshots

LATEST = "latest"


def normalize_filter_path(path: str) -> str:
    """A --path as backups record paths: absolute (from the current directory), no trailing slash."""
    if not path or "\0" in path:
        raise UsageError(f"--path {path!r} is not a path")
    return os.path.normpath(os.path.abspath(path))


@dataclass(frozen=True)
class SnapshotFilter:
    """Snapshots of all these paths, of one of these hosts, passing these tag lists (restic's: `a,b`
    both tags, several lists any of them; repo/tag_lists.py); an empty filter passes all."""

    paths: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, paths: Iterable[str] = (), hosts: Iterable[str] = (), tags: Iterable[str] = ()
    ) -> SnapshotFilter:
        given_hosts = tuple(dict.fromkeys(h for h in hosts if h))
        return cls(tuple(normalize_filter_path(p) for p in paths), given_hosts, tuple(tags))

    def __bool__(self) -> bool:
        return bool(self.paths or self.hosts or self.tags)

    def matches(self, snapshot: Snapshot) -> bool:
        return bool(filter_snapshots([("", snapshot)], paths=self.paths, hosts=self.hosts, tags=self.tags))

    def describe(self) -> str:
        """The filter as the options that made it, for messages."""
        words = [f"--path {p}" for p in self.paths]
        words += [f"--host {h}" for h in self.hosts]
        words += [f"--tag {t}" for t in self.tags]
        return " ".join(words)


def holds(snapshot: Snapshot, subpath: str) -> bool:
    """Whether one of the snapshot's backed-up paths is `subpath`, lies above it or below it."""
    wanted = "/" + subpath.strip("/")
    return any(is_within(wanted, p) or is_within(p, wanted) for p in snapshot.paths)


def choose_snapshot(
    repo: Repository, ref: str, snapshot_filter: SnapshotFilter | None = None, *, subpath: str = "/"
) -> tuple[str, Snapshot]:
    """The snapshot `ref` names under the filter (see the module docstring for "latest" and SUBPATH)."""
    snapshot_filter = snapshot_filter or SnapshotFilter()
    ref = ref.strip()
    if ref != LATEST:
        snapshot_id, snapshot = repo.find_snapshot(ref)
        if not snapshot_filter.matches(snapshot):
            raise NotFoundError(f"snapshot {snapshot_id[:8]} does not match {snapshot_filter.describe()}")
        return snapshot_id, snapshot
    candidates = [(sid, s) for sid, s in repo.list_snapshots() if snapshot_filter.matches(s)]
    if not candidates:
        if snapshot_filter:
            raise NotFoundError(f"no snapshot matches {snapshot_filter.describe()}")
        raise NotFoundError("the repository has no snapshots")
    if subpath.strip("/"):
        holding = [item for item in candidates if holds(item[1], subpath)]
        if holding:
            return holding[-1]
    return candidates[-1]


def choose_snapshots(
    repo: Repository, refs: Iterable[str], snapshot_filter: SnapshotFilter | None = None
) -> list[tuple[str, Snapshot]]:
    """The snapshots named by `refs` (each must pass the filter), or with no refs every snapshot that
    passes it; oldest first, each once."""
    snapshot_filter = snapshot_filter or SnapshotFilter()
    refs = list(refs)
    if not refs:
        return [(sid, s) for sid, s in repo.list_snapshots() if snapshot_filter.matches(s)]
    chosen = dict(choose_snapshot(repo, ref, snapshot_filter) for ref in refs)
    return sorted(chosen.items(), key=chronological)
