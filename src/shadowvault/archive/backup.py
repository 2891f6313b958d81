"""A backup: take a shadow set over the volumes that hold the paths, archive the shadows, save a snapshot.

Which volumes get a shadow set: every volume that holds a path, except the machine's root filesystem
(never frozen or snapshotted by us: paths on it are read live and their consistency is "none", with
a warning) and except when the provider `none` is asked for (everything read live). Paths are
recorded as the original paths; the shadows' `.shadowvault` directories are never backed up.

Incremental against the newest snapshot of the same paths from the same host: a file whose inode,
size, mtime and ctime are unchanged reuses the parent's blobs without being read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shadowvault import __version__
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.store import blob_kinds
from shadowvault.archive.walker import Archiver, Source, WalkStats
from shadowvault.errors import NotFoundError, UsageError
from shadowvault.repo.snapshot import Snapshot
from shadowvault.shadow.providers.base import SHADOW_DIR_NAME

log = logging.getLogger(__name__)

NO_PROVIDER = "none"
FILES_COMPONENT = "files"


@dataclass
class BackupRequest:
    """What to back up and how; plain values, as the CLI or a test gives them."""

    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    provider: str = "auto"
    writers: list[str] = field(default_factory=list)
    host: str | None = None
    parent: str | None = None  # a snapshot ref; None = the newest snapshot of the same paths and host
    full: bool = False  # read every file, ignoring the parent
    # components (see shadowvault.components.snapshot): `paths` are read below `source_root` and
    # recorded as given; `extra_sources` are (recorded path, read path) pairs (generated documents);
    # `components` is what Snapshot.components records (default: files)
    source_root: str = "/"
    extra_sources: list[tuple[str, str]] = field(default_factory=list)
    components: list[str] = field(default_factory=list)


@dataclass
class BackupResult:
    snapshot_id: str
    snapshot: Snapshot
    stats: WalkStats
    duration: float
    freeze_window: float | None
    added_bytes: int | None
    warnings: list[str]

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of what could not be read: in the snapshot as error entries."""
        return self.stats.errors

    @property
    def file_warnings(self) -> list[tuple[str, str]]:
        """(path, reason) of what was stored but changed while read, or vanished before it was read."""
        return self.stats.warnings

    def summary(self) -> dict[str, Any]:
        """The final summary a user or a script reads."""
        return {
            "snapshot_id": self.snapshot_id,
            **self.stats.as_dict(),
            "added_bytes": self.added_bytes,
            "duration": round(self.duration, 3),
            "freeze_window": self.freeze_window,
            "consistency": dict(self.snapshot.consistency),
            "parent": self.snapshot.parent,
        }


def normalize_path(path: str) -> bytes:
    """Absolute path, parent directories resolved (the last component is kept: a symlink stays one)."""
    raw = os.fsencode(path)
    absolute = os.path.abspath(raw)
    if absolute == b"/":
        return absolute
    parent, name = os.path.split(absolute)
    resolved = os.path.join(os.path.realpath(parent), name)
    if not os.path.lexists(resolved):
        raise NotFoundError(f"{path}: no such file or directory")
    return resolved


def _drop_nested(paths: list[bytes]) -> list[bytes]:
    """Remove paths that lie inside another requested path (it already covers them)."""
    result: list[bytes] = []
    for path in sorted(set(paths)):
        if any(path == p or path.startswith(p.rstrip(b"/") + b"/") for p in result):
            continue
        result.append(path)
    return result


@dataclass
class _Plan:
    live: list[bytes] = field(default_factory=list)  # paths read live
    shadowed: dict[str, list[bytes]] = field(default_factory=dict)  # volume mount point -> paths
    volume_roots: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)


def plan(paths: list[bytes], provider: str) -> _Plan:
    """Which paths are read through a shadow set and which live (root filesystem, provider `none`)."""
    from shadowvault.shadow.volumes import list_volumes, volume_of

    volumes = list_volumes(with_uuid=False)
    root = volume_of("/", volumes)
    result = _Plan()
    for path in paths:
        volume = volume_of(os.fsdecode(path), volumes)
        result.volume_roots.add(volume.mount_point)
        if provider == NO_PROVIDER:
            result.live.append(path)
        elif volume.mount_point == root.mount_point or (volume.dev and volume.dev == root.dev):
            # the root filesystem, also when reached through a bind mount of part of it
            result.live.append(path)
            result.warnings.append(
                f"{os.fsdecode(path)} is on the root filesystem, which is never snapshotted: "
                "read live (consistency none)"
            )
        else:
            result.shadowed.setdefault(volume.mount_point, []).append(path)
    return result


def _snapshot_list(repo: Any) -> list[tuple[str, Snapshot]]:
    found = []
    for item in repo.list_snapshots():
        if isinstance(item, tuple):
            found.append((item[0], item[1]))
        else:
            found.append((item.id, item.snapshot if hasattr(item, "snapshot") else item))
    return found


def find_parent(repo: Any, paths: list[str], host: str) -> tuple[str, Snapshot] | None:
    """The newest snapshot of exactly these paths from this host."""
    wanted = sorted(paths)
    best: tuple[str, Snapshot] | None = None
    for snap_id, snap in _snapshot_list(repo):
        if snap.host == host and sorted(snap.paths) == wanted and (best is None or snap.time > best[1].time):
            best = (snap_id, snap)
    return best


def _resolve_snapshot(repo: Any, ref: str) -> tuple[str, Snapshot]:
    found = repo.find_snapshot(ref)
    if isinstance(found, tuple):
        return found[0], found[1]
    return found.id, found.snapshot if hasattr(found, "snapshot") else found


@contextlib.contextmanager
def _shadow_set(request: BackupRequest, volumes: list[str]) -> Iterator[Any]:
    """The shadow set over `volumes` (None when there is nothing to shadow)."""
    if not volumes:
        if request.writers:
            raise UsageError("--writer needs a shadow set, but no path is on a volume that can be shadowed")
        yield None
        return
    from shadowvault.shadow.coordinator import shadow_set
    from shadowvault.shadow.privilege import check_may_create_shadow_sets

    check_may_create_shadow_sets(hint="--provider none backs up the live files instead")
    with shadow_set(volumes, list(request.writers), provider=request.provider) as manifest:
        yield manifest


def _consistency(manifest: Any, planned: _Plan) -> dict[str, str]:
    """Grade per component: files outside writers by the shadows, writer components by their writers."""
    grades: dict[str, str] = {}
    if manifest is None or planned.live:
        grades[FILES_COMPONENT] = "none"
    else:
        atomic = all(shadow.atomic for shadow in manifest.shadows)
        grades[FILES_COMPONENT] = "crash" if atomic else "none"
    if manifest is not None:
        for component in manifest.components():
            grades[component.name] = str(component.consistency)
    return grades


def run_backup(
    repo: Any,
    request: BackupRequest,
    *,
    stats: WalkStats | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> BackupResult:
    """Back up `request.paths` into `repo` and save the snapshot; file errors are in the result."""
    started = time.monotonic()
    started_wall = time.time()
    if not request.paths:
        raise UsageError("no paths to back up")
    path_filter = PathFilter(excludes=request.excludes)
    source_root = os.fsencode(os.path.abspath(request.source_root))
    foreign_root = source_root != b"/"  # another machine's tree: read live, below that root
    if foreign_root:
        originals = _drop_nested([_recorded_below(p, source_root) for p in request.paths])
    else:
        originals = _drop_nested([normalize_path(p) for p in request.paths])
    recorded = [os.fsdecode(p) for p in originals]
    host = request.host or socket.gethostname()
    planned = plan(originals, NO_PROVIDER if foreign_root else request.provider)
    warnings = list(planned.warnings)
    for message in planned.warnings:
        (on_warning or log.warning)(message)

    parent: tuple[str, Snapshot] | None = None
    if request.parent:
        parent = _resolve_snapshot(repo, request.parent)
    elif not request.full:
        parent = find_parent(repo, recorded, host)

    skip = {os.fsencode(mp).rstrip(b"/") + b"/" + SHADOW_DIR_NAME.encode() for mp in planned.volume_roots}
    repo_path = getattr(repo, "path", None)
    if isinstance(repo_path, (str, os.PathLike)):
        skip.add(os.fsencode(os.path.realpath(repo_path)))
    stats = stats or WalkStats()
    data_kind, _ = blob_kinds(repo)
    added_before = _added_bytes(repo)

    with _shadow_set(request, sorted(planned.shadowed)) as manifest:
        sources = [Source(p, _below(source_root, p)) for p in planned.live]
        sources += [Source(os.fsencode(orig), os.fsencode(read)) for orig, read in request.extra_sources]
        if manifest is not None:
            from shadowvault.shadow.coordinator import shadow_path

            for paths in planned.shadowed.values():
                for p in paths:
                    sources.append(Source(p, os.fsencode(shadow_path(manifest, os.fsdecode(p)))))
        archiver = Archiver(
            repo,
            path_filter=path_filter,
            skip_paths=skip,
            stats=stats,
            copy_started=manifest.created if manifest is not None else None,
            **({"virtual_root": source_root} if foreign_root else {}),
        )
        root = archiver.archive(sources, parent[1].tree if parent else None)

    manifest_blob = None
    components = list(request.components) or [FILES_COMPONENT]
    freeze_window = None
    if manifest is not None:
        from shadowvault.shadow import manifest as manifest_doc

        manifest_blob = repo.save_blob(data_kind, manifest_doc.encode(manifest))
        components += [c.name for c in manifest.components()]
        freeze_window = manifest.freeze_window
        for note in manifest.notes:
            warnings.append(note)
            (on_warning or log.warning)(note)
    duration = time.monotonic() - started
    added = _added_bytes(repo)
    added_bytes = added - added_before if added is not None and added_before is not None else None
    snapshot = Snapshot(
        time=started_wall,
        host=host,
        username=_username(),
        paths=recorded,
        tags=list(request.tags),
        tree=root,
        parent=parent[0] if parent else None,
        manifest=manifest_blob,
        components=components,
        consistency=_component_consistency(_consistency(manifest, planned), request.components),
        excludes=list(request.excludes),
        summary={
            **stats.as_dict(),
            "bytes": stats.bytes_total,
            "added_bytes": added_bytes,
            "duration": round(duration, 3),
            "freeze_window": freeze_window,
            "error_paths": [path for path, _ in stats.errors[:100]],
            # stored, but worth a look: changed while read, vanished before read (first 100)
            "warning_paths": [path for path, _ in stats.warnings[:100]],
        },
        program_version=__version__,
    )
    repo.flush()
    snapshot_id = repo.save_snapshot(snapshot)
    return BackupResult(
        snapshot_id=snapshot_id,
        snapshot=snapshot,
        stats=stats,
        duration=time.monotonic() - started,
        freeze_window=freeze_window,
        added_bytes=added_bytes,
        warnings=warnings,
    )


def _recorded_below(path: str, source_root: bytes) -> bytes:
    """An absolute recorded path for `path` of a foreign source root; it must exist below that root."""
    recorded = os.path.normpath(b"/" + os.fsencode(path).lstrip(b"/"))
    if not os.path.lexists(_below(source_root, recorded)):
        raise NotFoundError(f"{path}: no such file or directory below {os.fsdecode(source_root)}")
    return recorded


def _below(source_root: bytes, path: bytes) -> bytes:
    return path if source_root == b"/" else source_root.rstrip(b"/") + path


def _component_consistency(grades: dict[str, str], components: list[str]) -> dict[str, str]:
    """Components read from the same files share the files' grade; `files` is kept only if asked."""
    if not components:
        return grades
    files_grade = grades.pop(FILES_COMPONENT, "none")
    for name in components:
        grades.setdefault(name, files_grade)
    return grades


def _added_bytes(repo: Any) -> int | None:
    """Bytes (as stored: compressed, encrypted) this process added to the repository so far."""
    counters = getattr(repo, "stats", None)
    value = getattr(counters, "stored_bytes_added", None) if counters is not None else None
    return value if isinstance(value, int) else None


def _username() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
