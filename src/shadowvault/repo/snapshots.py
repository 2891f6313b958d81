"""Snapshot documents: save, load, list, find by id, prefix or "latest", remove.

A snapshot file is named by the BLAKE3 of its sealed bytes; one whose content does not match its
name, or that does not authenticate, is damaged for good. See docs/repository.md, "Snapshots".
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable

from shadowvault.errors import IntegrityError, NotFoundError, UsageError
from shadowvault.repo.backend import Backend, refuse_oversized
from shadowvault.repo.format import BLOB_ID_LENGTH, decode_document, encode_document, file_id
from shadowvault.repo.sealing import Sealer
from shadowvault.repo.snapshot import Snapshot, chronological
from shadowvault.repo.snapshot_text import storable
from shadowvault.repo.tag_lists import has_tag_lists

log = logging.getLogger(__name__)

SNAPSHOT_AAD = b"sv1:snapshot"
SNAPSHOTS_DIR = "snapshots/"


class SnapshotStore:
    """The snapshots/ directory. `damaged` names the files the last `list` skipped."""

    def __init__(self, backend: Backend, sealer: Sealer) -> None:
        self._backend = backend
        self._sealer = sealer
        self.damaged: dict[str, str] = {}  # id -> why
        self._listed_sizes: dict[str, int] = {}  # id -> size, as the last listing gave them

    def save(self, snapshot: Snapshot) -> str:
        """Store the snapshot; returns its id (hex). The caller made everything it uses durable."""
        raw = self._sealer.seal(encode_document(storable(snapshot)), SNAPSHOT_AAD)
        snapshot_id = file_id(raw)
        self._backend.save(f"{SNAPSHOTS_DIR}{snapshot_id}", raw)
        return snapshot_id

    def load(self, snapshot_id: str) -> Snapshot:
        name = f"{SNAPSHOTS_DIR}{snapshot_id}"
        refuse_oversized(name, self._listed_sizes.get(snapshot_id, 0))  # one planted file, read whole
        raw = self._backend.load(name)
        if file_id(raw) != snapshot_id:
            raise IntegrityError(
                f"snapshot {snapshot_id[:8]} is damaged (its content does not match its name)"
            )
        what = f"snapshot {snapshot_id[:8]}"
        snapshot = decode_document(self._sealer.open(raw, SNAPSHOT_AAD, what), Snapshot, what)
        if len(snapshot.tree) != BLOB_ID_LENGTH:
            # every backup names its root tree: one without (a crafted or damaged file) is not an
            # empty snapshot, which it once listed and checked as while restore failed on it
            raise IntegrityError(f"snapshot {snapshot_id[:8]} is damaged (it names no valid root tree)")
        return snapshot

    def ids(self) -> builtins.list[str]:
        """The names of the files right under snapshots/ (a file further down is no snapshot:
        `stray_snapshot_files`)."""
        listed = self._backend.list(SNAPSHOTS_DIR)
        sizes = {info.name[len(SNAPSHOTS_DIR) :]: info.size for info in listed if not _stray(info.name)}
        self._listed_sizes = sizes
        return list(sizes)

    def list(self, *, skip_damaged: bool = True) -> builtins.list[tuple[str, Snapshot]]:
        """Every readable snapshot, oldest first. A damaged snapshot file is skipped and named in
        `damaged` (it can be removed with `forget ID`); with `skip_damaged=False` it raises
        IntegrityError instead."""
        found = []
        damaged: dict[str, str] = {}
        for snapshot_id in self.ids():
            try:
                found.append((snapshot_id, self.load(snapshot_id)))
            except NotFoundError:
                continue  # forgotten while we listed
            except IntegrityError as err:
                if not skip_damaged:
                    raise
                if snapshot_id not in self.damaged:  # said once, however often a command lists
                    log.warning("%s; skipped (remove it with `shadowvault forget %s`)", err, snapshot_id[:8])
                damaged[snapshot_id] = str(err)
        self.damaged = damaged
        found.sort(key=chronological)
        return found

    def resolve_id(self, ref: str) -> str:
        """The full id for a full id or unique prefix, without reading the snapshot (so a damaged
        one can still be named, e.g. to forget it)."""
        ref = ref.strip().lower()
        if not ref or any(c not in "0123456789abcdef" for c in ref):
            raise UsageError(f"{ref!r} is not a snapshot id (hex id, unique prefix, or 'latest')")
        candidates = [i for i in self.ids() if i.startswith(ref)]
        if not candidates:
            raise NotFoundError(f"no snapshot with id {ref}")
        if len(candidates) > 1:
            raise UsageError(f"snapshot id prefix {ref} is ambiguous ({len(candidates)} snapshots match)")
        return candidates[0]

    def find(
        self,
        ref: str,
        *,
        paths: Iterable[str] | None = None,
        host: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> tuple[str, Snapshot]:
        """Resolve an id, a unique id prefix or "latest" (optionally the latest matching filters)."""
        ref = ref.strip()
        if ref == "latest":
            hosts = [host] if host is not None else None
            matches = filter_snapshots(self.list(), paths=paths, hosts=hosts, tags=tags)
            if not matches:
                raise NotFoundError(
                    "no snapshot matches" if (paths or host or tags) else "the repository has no snapshots"
                )
            return matches[-1]
        snapshot_id = self.resolve_id(ref)
        return snapshot_id, self.load(snapshot_id)

    def remove(self, snapshot_id: str) -> None:
        self._backend.remove(f"{SNAPSHOTS_DIR}{snapshot_id}")


def stray_snapshot_files(backend: Backend) -> builtins.list[str]:
    """Files in subdirectories of snapshots/: a snapshot is a file right under it, named by its id,
    so no command lists, reads or removes these (they were looked up by their last name, not found,
    and skipped without a word); `check` names them."""
    return [info.name for info in backend.list(SNAPSHOTS_DIR) if _stray(info.name)]


def _stray(name: str) -> bool:
    return "/" in name[len(SNAPSHOTS_DIR) :]


def filter_snapshots(
    snapshots: list[tuple[str, Snapshot]],
    *,
    paths: Iterable[str] | None = None,
    hosts: Iterable[str] | None = None,
    tags: Iterable[str] | None = None,
) -> list[tuple[str, Snapshot]]:
    """Snapshots whose paths include all `paths`, taken on one of `hosts` (none given: any), that
    pass the tag lists `tags` (repo/tag_lists.py: `a,b` both, several lists any of them)."""
    want_paths = set(paths or ())
    want_hosts = set(hosts or ())
    want_tags = list(tags or ())
    return [
        (sid, snap)
        for sid, snap in snapshots
        if (not want_hosts or snap.host in want_hosts)
        and want_paths <= set(snap.paths)
        and has_tag_lists(want_tags, snap.tags)
    ]


def latest_of_each_group(snapshots: list[tuple[str, Snapshot]], count: int) -> list[tuple[str, Snapshot]]:
    """The last `count` snapshots of each host and set of paths (restic's `snapshots --latest`), in
    the order they came in (oldest first)."""
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    kept = []
    for sid, snap in reversed(snapshots):
        group = (snap.host, tuple(sorted(snap.paths)))
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= count:
            kept.append((sid, snap))
    return kept[::-1]
