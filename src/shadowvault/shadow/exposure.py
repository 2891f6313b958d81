"""Exposing a shadow: a read-only bind mount of its image at a directory the user names, and its record.

The bind is made in two steps (`mount --bind`, then `remount,ro,nosuid,nodev,bind`) because a bind
mount takes the flags of its source until it is remounted; if the second step fails the first is
undone. nosuid and nodev: a shadow is for reading, never a way to run a setuid program or open a
device node of the past with today's permissions. A nested btrfs subvolume's own image is bound at
its place below the exposure, as the backup reads it (providers/btrfs.py). Each set's exposures are
recorded in `<store>/<id>.exposed` (a JSON list), so that `shadows list` shows them and releasing
the set unmounts them first.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from shadowvault import proc
from shadowvault.errors import CommandError, NotFoundError, ProviderError, UsageError
from shadowvault.fsutil import atomic_write
from shadowvault.paths_within import is_plain_absolute, is_within
from shadowvault.shadow.manifest import Shadow, ShadowSetManifest
from shadowvault.shadow.path_map import nested_images
from shadowvault.shadow.providers.base import IMAGE_NAME, SHADOW_DIR_NAME
from shadowvault.shadow.providers.fanotify import base_dir as fanotify_base_dir
from shadowvault.shadow.volumes import list_volumes
from shadowvault.typed_decoding import decode_json

if TYPE_CHECKING:
    from shadowvault.shadow.store import ShadowStore

log = logging.getLogger(__name__)

EXPOSED_SUFFIX = ".exposed"


class Exposure(msgspec.Struct, kw_only=True):
    """One shadow of a set mounted read-only at `at`."""

    set_id: str
    volume: str
    index: int
    source: str  # the shadow's path that is mounted
    at: str
    created_dir: bool = False  # `at` was made by expose and is removed by unexpose
    created: float = 0.0


# -- the bind mounts ---------------------------------------------------------------------------


def is_mount_point(path: str) -> bool:
    """Whether `path` is in the mount table (st_dev comparison would call btrfs subvolumes mounts)."""
    path = os.path.realpath(path)
    return any(v.mount_point == path for v in list_volumes(with_uuid=False))


def bind_readonly(source: str, at: str) -> None:
    """Mount `source` read-only, nosuid and nodev at `at`."""
    proc.run(["mount", "--bind", source, at], timeout=30)
    try:
        proc.run(["mount", "-o", "remount,ro,nosuid,nodev,bind", at], timeout=30)
    except CommandError:
        proc.run(["umount", at], timeout=30, check=False)
        raise


def _bind_with_nested(shadow: Shadow, target: str) -> None:
    """The shadow's image at `target`, and each nested subvolume's own image at its place below it."""
    bind_readonly(shadow.path, target)
    try:
        for live, read in sorted(nested_images(shadow).items()):
            bind_readonly(read, os.path.join(target, os.path.relpath(live, shadow.volume)))
    except BaseException:
        proc.run(["umount", "--recursive", target], timeout=30, check=False)
        raise


def unmount(at: str) -> None:
    """Unmount the exposure at `at`; a busy mount is an error naming the path, never a lazy unmount."""
    if not is_mount_point(at):
        log.info("%s is not mounted any more", at)
        return
    done = proc.run(["umount", "--recursive", at], timeout=30, check=False)  # nested images first
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"umount exit status {done.returncode}"
        if "busy" in reason:
            reason = "it is busy (a process has a file or directory open there)"
        raise ProviderError(f"cannot unexpose {at}: {reason}")


def _is_our_image(source: str) -> bool:
    """Whether `source` lies in a provider's own image, `.../.shadowvault/<set id>-<index>[...]` or a
    fanotify view `<state dir>/fanotify/<set id>-<index>`: only such a path is ever exposed."""
    parts = source.split("/")
    return any(
        IMAGE_NAME.match(name.split(".", 1)[0]) is not None
        and (parent == SHADOW_DIR_NAME or "/".join(parts[:i]) == fanotify_base_dir())
        for i, (parent, name) in enumerate(itertools.pairwise(parts), 1)
    )


def is_exposure(exposure: Exposure) -> bool:
    """Whether what is mounted at `exposure.at` is the read-only bind of its shadow that expose made.

    Checked before unmounting: an exposure unmounted by hand and its directory reused for another
    mount, or a damaged record naming any mount point, must not have that unmounted. The mount at
    `at` must show the filesystem and subtree (mountinfo's major:minor and root) of `source`, an
    image in a provider's own place, and must not be the mount that holds `source` itself.
    """
    source = exposure.source
    if not is_plain_absolute(source) or not _is_our_image(source):
        return False
    volumes = list_volumes(with_uuid=False)
    mounted = next((v for v in volumes if v.mount_point == exposure.at), None)
    holders = [v for v in volumes if is_within(source, v.mount_point) and v is not mounted]
    if mounted is None or not holders:
        return False
    holder = max(holders, key=lambda v: len(v.mount_point))
    root = os.path.normpath(os.path.join(holder.root, os.path.relpath(source, holder.mount_point)))
    return (mounted.dev, mounted.root) == (holder.dev, root)


# -- the records -------------------------------------------------------------------------------


def _record(store: ShadowStore, set_id: str) -> Path:
    return store.root / f"{set_id}{EXPOSED_SUFFIX}"


def exposures(store: ShadowStore, set_id: str | None = None) -> list[Exposure]:
    """The exposures of one set, or of every set."""
    ids = [set_id] if set_id else store.ids()
    found: list[Exposure] = []
    for sid in ids:
        try:
            data = _record(store, sid).read_bytes()
        except FileNotFoundError:
            continue
        try:
            found.extend(decode_json(data, list[Exposure]))
        except msgspec.DecodeError as err:
            log.warning("exposure record of %s is damaged: %s", sid, err)
    return found


def _write(store: ShadowStore, set_id: str, exposed: list[Exposure]) -> None:
    path = _record(store, set_id)
    if exposed:
        atomic_write(path, msgspec.json.encode(exposed), mode=0o600)
    else:
        path.unlink(missing_ok=True)


def forget(store: ShadowStore, set_id: str) -> None:
    """Drop the exposure record of a set whose own record is gone."""
    _record(store, set_id).unlink(missing_ok=True)


def pick_shadow(manifest: ShadowSetManifest, volume_or_index: str | int | None) -> tuple[int, Shadow]:
    if not manifest.shadows:
        raise UsageError(f"shadow set {manifest.id} has no shadows")
    if volume_or_index is None:
        return 0, manifest.shadows[0]
    if isinstance(volume_or_index, int) or str(volume_or_index).isdigit():
        index = int(volume_or_index)
        if not 0 <= index < len(manifest.shadows):
            count = len(manifest.shadows)
            raise UsageError(f"shadow set {manifest.id} has {count} shadow(s), no #{index}")
        return index, manifest.shadows[index]
    wanted = os.path.realpath(str(volume_or_index))
    for index, shadow in enumerate(manifest.shadows):
        if shadow.volume in (wanted, str(volume_or_index)):
            return index, shadow
    volumes = ", ".join(s.volume for s in manifest.shadows)
    raise UsageError(f"shadow set {manifest.id} has no shadow of {volume_or_index} (it has {volumes})")


def expose(
    store: ShadowStore, set_id: str, volume_or_index: str | int | None, at: Path | str | None
) -> Exposure:
    """Mount one shadow of the set read-only at `at` (created if missing) and record it."""
    if at is None:
        raise UsageError("say where to expose the shadow: --at DIR")
    with store.locked():
        manifest = store.load(set_id)
        if manifest.state != "created":
            raise UsageError(f"shadow set {manifest.id} cannot be exposed: it is {manifest.state}")
        index, shadow = pick_shadow(manifest, volume_or_index)
        target = os.path.realpath(str(at))
        for exposure in exposures(store):
            if exposure.at == target:
                raise UsageError(f"{target} already exposes shadow set {exposure.set_id}")
        created_dir = False
        if not os.path.lexists(target):
            try:
                os.makedirs(target, mode=0o755)
            except OSError as err:
                raise UsageError(f"cannot create {target}: {err.strerror}") from err
            created_dir = True
        elif not os.path.isdir(target):
            raise UsageError(f"{target} is not a directory")
        elif is_mount_point(target):
            raise UsageError(f"{target} is already a mount point")
        try:
            _bind_with_nested(shadow, target)
        except BaseException:
            if created_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(target)
            raise
        exposure = Exposure(
            set_id=manifest.id,
            volume=shadow.volume,
            index=index,
            source=shadow.path,
            at=target,
            created_dir=created_dir,
            created=time.time(),
        )
        try:
            _write(store, manifest.id, [*exposures(store, manifest.id), exposure])
        except BaseException:
            unmount(target)
            raise
        return exposure


def _remove_made_dir(exposure: Exposure) -> None:
    """Remove the directory expose made for the exposure (if it did, and it is empty)."""
    if not exposure.created_dir:
        return
    try:
        os.rmdir(exposure.at)
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            log.warning("could not remove %s: %s", exposure.at, err.strerror)


def unexpose(store: ShadowStore, at: Path | str | None = None, set_id: str | None = None) -> list[str]:
    """Unmount the exposure at `at`, or every exposure of `set_id`; returns the unmounted paths."""
    if at is None and set_id is None:
        raise UsageError("say which exposure to remove: a directory or a shadow set")
    with store.locked():
        target = os.path.realpath(str(at)) if at is not None else None
        chosen = [e for e in exposures(store, set_id) if target is None or e.at == target]
        if target is not None and not chosen:
            raise NotFoundError(f"{target}: no shadow is exposed there")
        done = []
        for exposure in chosen:
            if is_mount_point(exposure.at) and not is_exposure(exposure):
                log.warning(
                    "%s is not the exposure of shadow set %s any more (what is mounted there is not its "
                    "shadow %s): left mounted, record dropped",
                    exposure.at,
                    exposure.set_id,
                    exposure.source,
                )
            else:
                unmount(exposure.at)
                _remove_made_dir(exposure)
            left = [e for e in exposures(store, exposure.set_id) if e.at != exposure.at]
            _write(store, exposure.set_id, left)
            done.append(exposure.at)
        return done
