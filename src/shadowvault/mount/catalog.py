"""The view's top levels: snapshots/, hosts/HOST/, tags/TAG/, ids/ and the `latest` links, kept current.

Like restic's mount: snapshots/ holds one directory per snapshot, named by its time (UTC) and short
id, and `latest`; hosts/HOST/ and tags/TAG/ hold links to those directories (and their own
`latest`); ids/ links each short id. The list is re-read when these levels are looked at, at most
every `refresh_seconds`: a backup made meanwhile appears, a forgotten snapshot disappears, and the
snapshots still listed stay readable after a prune (the repository finds blobs a prune moved).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from shadowvault.errors import NotFoundError, ShadowvaultError
from shadowvault.mount.names import entry_name, short_ids, snapshot_name
from shadowvault.repo.snapshot import Snapshot, chronological
from shadowvault.repo.snapshots import filter_snapshots

log = logging.getLogger(__name__)

LATEST = "latest"


@dataclass(frozen=True)
class SnapshotDir:
    """snapshots/NAME: the root of one snapshot's tree."""

    snapshot_id: str
    snapshot: Snapshot


@dataclass(frozen=True)
class Link:
    """A symbolic link of the view (to a snapshot's directory, relative to where the link is)."""

    target: str
    time: float


@dataclass(frozen=True)
class VirtualDir:
    """A directory of the view's top levels."""

    time: float
    entries: dict[str, Entry] = field(default_factory=dict)


Entry = VirtualDir | Link | SnapshotDir


@dataclass(frozen=True)
class SnapshotFilter:
    """Which snapshots the view shows: of one of these hosts, passing these tag lists (restic's `a,b`
    and repeated lists: repo/tag_lists.py), holding all these paths."""

    hosts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    def keeps(self, snap: Snapshot) -> bool:
        return bool(filter_snapshots([("", snap)], hosts=self.hosts, tags=self.tags, paths=self.paths))


class SnapshotSource(Protocol):
    def snapshot_ids(self) -> list[str]: ...

    def load_snapshot(self, snapshot_id: str) -> Snapshot: ...

    def reload_index(self) -> None: ...


def build_view(snapshots: list[tuple[str, Snapshot]]) -> VirtualDir:
    """The top levels for `snapshots` (in any order)."""
    ordered = sorted(snapshots, key=chronological)
    shorts = short_ids(sid for sid, _ in ordered)
    names = {sid: snapshot_name(snap.time, shorts[sid]) for sid, snap in ordered}
    newest = ordered[-1][1].time if ordered else 0.0
    by_name: dict[str, Entry] = {names[sid]: SnapshotDir(sid, snap) for sid, snap in ordered}
    if ordered:
        by_name[LATEST] = Link(names[ordered[-1][0]], newest)
    ids: dict[str, Entry] = {
        shorts[sid]: Link(f"../snapshots/{names[sid]}", snap.time) for sid, snap in ordered
    }
    root = {
        "snapshots": VirtualDir(newest, by_name),
        "hosts": _grouped(ordered, names, lambda snap: [snap.host], newest),
        "tags": _grouped(ordered, names, lambda snap: snap.tags, newest),
        "ids": VirtualDir(newest, ids),
    }
    return VirtualDir(newest, dict(root))


def _grouped(
    ordered: list[tuple[str, Snapshot]],
    names: dict[str, str],
    keys: Callable[[Snapshot], list[str]],
    newest: float,
) -> VirtualDir:
    """One directory per key (a host, a tag) of links to the snapshots that have it, and `latest`."""
    groups: dict[str, dict[str, Entry]] = {}
    times: dict[str, float] = {}
    for sid, snap in ordered:  # oldest first: each group's `latest` ends on its newest
        for key in dict.fromkeys(entry_name(k) for k in keys(snap)):
            group = groups.setdefault(key, {})
            group[names[sid]] = Link(f"../../snapshots/{names[sid]}", snap.time)
            group[LATEST] = Link(names[sid], snap.time)
            times[key] = snap.time
    return VirtualDir(newest, {key: VirtualDir(times[key], entries) for key, entries in groups.items()})


class Catalog:
    """The current top levels, re-read at most every `refresh_seconds` when asked for fresh ones."""

    def __init__(
        self,
        source: SnapshotSource,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        shown: SnapshotFilter | None = None,
    ) -> None:
        self._source = source
        self._shown = shown or SnapshotFilter()
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._unreadable: set[str] = set()
        self._checked = clock()
        self._load(first=True)
        self._root = self._build()

    def root(self, *, fresh: bool = False) -> VirtualDir:
        """The top levels; with `fresh`, re-read first if the last read is older than the interval."""
        if fresh and self._due():
            with self._lock:
                if self._due():
                    self._refresh()
        return self._root

    def _due(self) -> bool:
        return self._clock() - self._checked >= self._refresh_seconds

    def _refresh(self) -> None:
        try:
            changed = self._load(first=False)
        except ShadowvaultError as err:  # the repository is unreachable for now: keep what we have
            log.warning("could not re-read the snapshot list: %s", err)
            changed = False
        self._checked = self._clock()
        if changed:
            self._root = self._build()

    def _build(self) -> VirtualDir:
        return build_view([(sid, snap) for sid, snap in self._snapshots.items() if self._shown.keeps(snap)])

    def _load(self, *, first: bool) -> bool:
        """Bring the snapshot documents up to date; True when the set of snapshots changed."""
        ids = set(self._source.snapshot_ids())
        gone = self._snapshots.keys() - ids
        for sid in gone:
            del self._snapshots[sid]
        added = False
        for sid in sorted(ids - self._snapshots.keys() - self._unreadable):
            try:
                self._snapshots[sid] = self._source.load_snapshot(sid)
                added = True
            except NotFoundError:
                continue  # forgotten while we listed
            except ShadowvaultError as err:
                log.warning("snapshot %s is left out of the view: %s", sid[:8], err)
                self._unreadable.add(sid)
        if added and not first:
            self._source.reload_index()  # the new snapshots' blobs
        return added or bool(gone)
