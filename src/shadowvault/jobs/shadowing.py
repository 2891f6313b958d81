"""Which paths a backup reads through a shadow set, the set itself, and how consistent each component is.

Every volume that holds a path gets a shadow, except the machine's root filesystem and except when
the provider `none` is asked for (everything read live). The root filesystem is never frozen or
copied by us: paths on it are read live and their consistency is "none", with a warning; a btrfs
root is the exception, shadowed by a snapshot, which needs no freeze. A provider named explicitly
that cannot serve a path is an error, never a silent fallback to live files. The shadows'
`.shadowvault` directories are never backed up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shadowvault.archive.backup import FILES_COMPONENT
from shadowvault.archive.walk_stats import Source
from shadowvault.errors import UsageError
from shadowvault.jobs.nested_mounts import find_nested
from shadowvault.jobs.snapshot_copies import snapshot_copies, snapshot_copies_note, subvolumes_below
from shadowvault.paths_within import is_within
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.path_map import nested_images, shadow_path
from shadowvault.shadow.providers.base import SHADOW_DIR_NAME, WHOLE_VOLUMES, ReadScope
from shadowvault.shadow.providers.names import AUTO, NO_PROVIDER
from shadowvault.shadow.providers.registry import get_provider
from shadowvault.shadow.requesting import ShadowSets
from shadowvault.shadow.volumes import Volume, list_volumes, volume_of

BTRFS = "btrfs"
READ_LIVE_ON_ROOT = (AUTO, "live")  # the providers that may read the root filesystem live (with a warning)


@dataclass
class VolumePlan:
    """The requested paths split into those read live and those read through a shadow of their volume."""

    live: list[bytes] = field(default_factory=list)  # paths read live
    shadowed: dict[str, list[bytes]] = field(default_factory=dict)  # volume mount point -> paths
    volume_roots: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    # mounts below the paths (jobs/nested_mounts.py): read through their own shadow, read live, skipped
    nested_shadowed: list[str] = field(default_factory=list)
    nested_live: list[str] = field(default_factory=list)
    nested_skipped: list[str] = field(default_factory=list)
    mount_notes: list[str] = field(default_factory=list)  # what was skipped, for the manifest
    read_paths: list[str] = field(default_factory=list)  # every path asked for (live or shadowed)
    nested_excluded: list[str] = field(default_factory=list)  # nested subvolumes below them excluded

    def skip_paths(self) -> set[bytes]:
        """The shadow directories at the roots of the volumes read: never backed up."""
        return {os.fsencode(mp).rstrip(b"/") + b"/" + SHADOW_DIR_NAME.encode() for mp in self.volume_roots}

    def read_scope(self) -> ReadScope:
        """What the set's providers must image: the paths, less the mounts, other tools' snapshots
        and excluded subvolumes that are not read (a nested subvolume elsewhere gets no snapshot)."""
        left_out = sorted({*self.nested_skipped, *self.nested_excluded})
        return ReadScope(paths=tuple(self.read_paths), left_out=tuple(left_out))

    def set_volumes(self) -> list[str]:
        """The volumes of the shadow set: those of the shadowed paths and of the mounts below the paths."""
        return sorted(set(self.shadowed) | set(self.nested_shadowed))


def plan(
    paths: list[bytes],
    provider: str,
    *,
    one_file_system: bool = False,
    left_out: Callable[[str], bool] = lambda _path: False,
    nested: bool = True,
    snapshot_copies_read: bool = False,
) -> VolumePlan:
    """Which paths are read through a shadow set and which live (root filesystem, provider `none`);
    with `nested`, the same for the mounts below them (`left_out` ones aside), and other tools'
    btrfs snapshots below them left out unless `snapshot_copies_read` (jobs/snapshot_copies.py)."""
    volumes = list_volumes(with_uuid=False)
    root = volume_of("/", volumes)
    result = VolumePlan(read_paths=[os.fsdecode(p) for p in paths])
    if nested:
        _plan_nested(result, paths, volumes, root, provider, one_file_system, left_out)
        subvolumes = subvolumes_below(result.read_paths, volumes)
        result.nested_excluded = [s for s in subvolumes if left_out(s)]
        if not snapshot_copies_read:
            _leave_out_snapshot_copies(result, subvolumes, left_out)
    for path in paths:
        volume = volume_of(os.fsdecode(path), volumes)
        result.volume_roots.add(volume.mount_point)
        if provider == NO_PROVIDER:
            result.live.append(path)
        elif volume.mount_point == root.mount_point and _snapshots_root(volume, provider):
            result.shadowed.setdefault(volume.mount_point, []).append(path)
        elif volume.mount_point == root.mount_point or (volume.dev and volume.dev == root.dev):
            # the root filesystem, also when reached through a bind mount of part of it
            if provider not in READ_LIVE_ON_ROOT:
                raise UsageError(
                    f"--provider {provider} cannot serve {os.fsdecode(path)}: it is on the root filesystem "
                    f"({volume.fstype}), which is never frozen or copied; --provider none reads it live"
                )
            result.live.append(path)
            result.warnings.append(
                f"{os.fsdecode(path)} is on the root filesystem, which is never snapshotted: "
                "read live (consistency none)"
            )
        else:
            result.shadowed.setdefault(volume.mount_point, []).append(path)
    return result


def _plan_nested(
    result: VolumePlan,
    paths: list[bytes],
    volumes: list[Volume],
    root: Volume,
    provider: str,
    one_file_system: bool,
    left_out: Callable[[str], bool],
) -> None:
    """Mounts below the paths: through their own shadow where one can be made with the provider asked
    for, live otherwise (said), or skipped (said, and noted in the manifest)."""
    found = find_nested(paths, volumes, one_file_system=one_file_system, left_out=left_out)
    for volume in found.read:
        mount = volume.mount_point
        result.volume_roots.add(mount)
        why_live = None
        if provider == NO_PROVIDER:
            pass
        elif volume.dev and volume.dev == root.dev and not _snapshots_root(root, provider):
            why_live = "it is part of the root filesystem, which is never snapshotted"
        elif provider not in (AUTO, NO_PROVIDER):
            why_live = get_provider(provider).unsupported_reason(volume)
        if provider == NO_PROVIDER or why_live is not None:
            result.nested_live.append(mount)
            if why_live is not None:
                result.warnings.append(f"{mount}: mounted inside the backed-up paths, read live ({why_live})")
        else:
            result.nested_shadowed.append(mount)
    result.nested_skipped = [mount for mount, _ in found.skipped]
    result.mount_notes = found.notes()
    result.warnings += result.mount_notes


def _leave_out_snapshot_copies(
    result: VolumePlan, subvolumes: list[str], left_out: Callable[[str], bool]
) -> None:
    """Other tools' read-only btrfs snapshots below the paths: recorded empty, like a mount not read."""
    not_read = result.nested_skipped
    copies = [
        copy
        for copy in snapshot_copies(subvolumes, left_out)
        if not any(is_within(copy, mount) for mount in not_read)
    ]
    if copies:
        result.nested_skipped = [*not_read, *copies]
        result.mount_notes.append(snapshot_copies_note(copies))
        result.warnings.append(result.mount_notes[-1])


def _snapshots_root(root: Volume, provider: str) -> bool:
    """A btrfs root filesystem is shadowed by a snapshot: atomic, and no freeze (freezing / is refused)."""
    return provider in (AUTO, BTRFS) and root.fstype == "btrfs"


@contextlib.contextmanager
def taken_shadow_set(
    sets: ShadowSets,
    volumes: list[str],
    writers: list[str],
    provider: str,
    scope: ReadScope = WHOLE_VOLUMES,
) -> Iterator[ShadowSetManifest | None]:
    """The shadow set over `volumes`, released on leaving (None when there is nothing to shadow);
    `scope`: what will be read of them (VolumePlan.read_scope)."""
    if not volumes:
        if writers:
            raise UsageError("--writer needs a shadow set, but no path is on a volume that can be shadowed")
        yield None
        return
    options = SetOptions(writers=writers, provider=provider, scope=scope)
    with sets.shadow_set(
        volumes, options, hint="--provider none backs up the live files instead"
    ) as manifest:
        yield manifest


def shadow_sources(manifest: ShadowSetManifest, planned: VolumePlan) -> list[Source]:
    """The shadowed paths, each recorded as the original and read in its volume's shadow."""
    return [
        Source(path, os.fsencode(shadow_path(manifest, os.fsdecode(path))))
        for paths in planned.shadowed.values()
        for path in paths
    ]


def mount_grafts(manifest: ShadowSetManifest | None, planned: VolumePlan) -> dict[bytes, Source]:
    """Where the walk reads each mount below the paths (its own shadow, or the live mount) and each
    nested subvolume a shadow leaves out (its own image)."""
    grafts = {os.fsencode(m): Source(os.fsencode(m), os.fsencode(m)) for m in planned.nested_live}
    if manifest is not None:
        grafts.update(_nested_image_grafts(manifest, planned))
        for mount in planned.nested_shadowed:
            grafts[os.fsencode(mount)] = Source(os.fsencode(mount), os.fsencode(shadow_path(manifest, mount)))
    return grafts


def _nested_image_grafts(manifest: ShadowSetManifest, planned: VolumePlan) -> dict[bytes, Source]:
    """The nested subvolumes below the paths read through a shadow, each read in its own image."""
    grafts: dict[bytes, Source] = {}
    for shadow in manifest.shadows:
        read_below = [os.fsdecode(p) for p in planned.shadowed.get(shadow.volume, [])]
        if shadow.volume in planned.nested_shadowed:
            read_below.append(shadow.volume)
        for live, read in nested_images(shadow).items():
            if any(is_within(live, root) and live != root for root in read_below):
                grafts[os.fsencode(live)] = Source(os.fsencode(live), os.fsencode(read))
    return grafts


def grade(manifest: ShadowSetManifest | None, planned: VolumePlan, components: list[str]) -> dict[str, str]:
    """Consistency per component: files outside writers by the shadows, writer components by their writers.

    Components read from the same files (`backup --component`) share the files' grade; `files` is
    kept only when asked for.
    """
    grades: dict[str, str] = {}
    if manifest is None or planned.live:
        grades[FILES_COMPONENT] = "none"
    else:
        atomic = all(shadow.atomic for shadow in manifest.shadows)
        grades[FILES_COMPONENT] = "crash" if atomic else "none"
    if manifest is not None:
        for component in manifest.components():
            grades[component.name] = str(component.consistency)
    if not components:
        return grades
    files_grade = grades.pop(FILES_COMPONENT, "none")
    for name in components:
        grades.setdefault(name, files_grade)
    return grades
