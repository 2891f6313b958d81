"""Previous versions of one path: every distinct version across snapshots, and bringing one back.

What Windows shows as "Previous Versions" of a file. A version is what a restore would lay down
for the entry (its type and content, or its link target, or its device number); snapshots that hold
the same version are listed under the first one that had it. A version comes back next to the file
(`PATH.~N~`) or over it, always whole: it is restored into a temporary directory beside the final
name and renamed into place, so nothing half-written ever carries the final name.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from shadowvault.archive.restore import Overwrite, Restorer, RestoreSource
from shadowvault.archive.tree_paths import find_node, text
from shadowvault.errors import NotFoundError, PartialFailure, ShadowvaultError, UsageError
from shadowvault.repo.snapshot import Snapshot, chronological
from shadowvault.repo.tree import Node

log = logging.getLogger(__name__)

VersionKey = tuple[str, tuple[bytes, ...], bytes | None, int | None]


@dataclass
class Version:
    """One distinct version: its number (1 is the oldest), the entry, and the snapshots holding it."""

    number: int
    node: Node
    snapshot_id: str  # the first snapshot that holds it
    snapshot: Snapshot
    snapshots: list[str] = field(default_factory=list)  # every snapshot that holds it, oldest first

    @property
    def time(self) -> float:
        return self.snapshot.time


def version_key(node: Node) -> VersionKey:
    """What makes two entries the same version: type and content (or link target, or device)."""
    return (node.type, tuple(node.content), node.link_target, node.rdev)


def find_versions(
    store: RestoreSource, path: str | bytes, snapshots: list[tuple[str, Snapshot]]
) -> list[Version]:
    """The distinct versions of `path` (an absolute path as backed up) in `snapshots` (oldest first)."""
    raw = os.fsencode(path)
    versions: dict[VersionKey, Version] = {}
    directory_in: str | None = None
    for snapshot_id, snap in sorted(snapshots, key=chronological):
        if not snap.tree:
            continue
        try:
            node = find_node(store, snap.tree, raw)
        except NotFoundError:
            continue
        if node is None or node.type == "dir":
            directory_in = directory_in or snapshot_id
            continue
        key = version_key(node)
        if key not in versions:
            versions[key] = Version(len(versions) + 1, node, snapshot_id, snap)
        versions[key].snapshots.append(snapshot_id)
    if not versions:
        if directory_in is not None:
            raise UsageError(
                f"{text(raw)} is a directory (in snapshot {directory_in[:8]}): versions are of files;"
                f" bring a directory back with `shadowvault restore {directory_in[:8]}:{text(raw)}`"
            )
        raise NotFoundError(f"{text(raw)} is in no snapshot")
    return list(versions.values())


def version_path(path: bytes, number: int) -> bytes:
    """Where version `number` of `path` goes when it does not replace the file: `PATH.~N~`."""
    return path + b".~%d~" % number


def restore_version(store: RestoreSource, version: Version, path: bytes, *, overwrite: bool) -> bytes:
    """Lay `version` of `path` down as `PATH.~N~` (or over `path` with `overwrite`); returns where."""
    final = path if overwrite else version_path(path, version.number)
    if not overwrite and os.path.lexists(final):
        raise UsageError(f"{text(final)} already exists: move it away, or replace the file with --overwrite")
    parent = os.path.dirname(final) or b"."
    if not os.path.isdir(parent):
        raise NotFoundError(
            f"{text(parent)} is not a directory here any more: restore it with `shadowvault restore`"
        )
    try:
        scratch = tempfile.mkdtemp(prefix=b".sv-version-", dir=parent)
    except OSError as err:
        raise ShadowvaultError(f"{text(parent)}: cannot write here: {err.strerror}") from err
    try:
        stats = Restorer(store, scratch, overwrite=Overwrite.NEVER, verify=True).restore(
            version.snapshot.tree, path
        )
        if stats.errors:
            _, why = stats.errors[0]
            raise PartialFailure(f"version {version.number} of {text(path)} could not be restored: {why}")
        laid = os.path.join(scratch, version.node.name)
        _sync(laid)
        try:
            os.rename(laid, final)
        except OSError as err:
            raise ShadowvaultError(f"{text(final)}: cannot replace it: {err.strerror}") from err
        _sync(parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("version %d of %s restored as %s", version.number, text(path), text(final))
    return final


def _sync(path: bytes) -> None:
    """Make a regular file's content or a directory's entries durable (other types have neither)."""
    if os.path.islink(path) or not (os.path.isfile(path) or os.path.isdir(path)):
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
