"""Orphan images: images in a provider's own place that no set of this store knows, and their removal.

The store remembers every volume it has made (or meant to make) a shadow on, in `<store>/.volumes`
(mount point and filesystem UUID). Reaping looks there, and on the volumes a creator passes, for
images named `<set id>-<index>` in `<mount>/.shadowvault` whose set neither a record nor an intent
of this store names: a record lost or removed by hand, or a commit that ended after its aborted set
was released, as its process exited. One store per volume: a second state directory making shadows
on the same volume would have its images taken for orphans.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from shadowvault.errors import ShadowvaultError
from shadowvault.fsutil import atomic_write
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import Provider
from shadowvault.shadow.providers.hidden_dir import filesystem_uuid
from shadowvault.shadow.providers.registry import all_providers
from shadowvault.shadow.volumes import Volume, list_volumes
from shadowvault.typed_decoding import decode_json

if TYPE_CHECKING:
    from shadowvault.shadow.store import ShadowStore

log = logging.getLogger(__name__)

VOLUMES_FILE = ".volumes"


class KnownVolume(msgspec.Struct, kw_only=True, frozen=True):
    """A volume this store has made shadows on: where orphan reaping looks for images."""

    mount_point: str
    fs_uuid: str | None = None


def _volumes_file(store: ShadowStore) -> Path:
    return store.root / VOLUMES_FILE


def known_volumes(store: ShadowStore) -> list[KnownVolume]:
    """The volumes this store has made (or meant to make) shadows on."""
    path = _volumes_file(store)
    try:
        return decode_json(path.read_bytes(), list[KnownVolume])
    except FileNotFoundError:
        return []
    except msgspec.DecodeError as err:
        log.warning("%s is damaged, started afresh: %s", path, err)
        return []


def _write_volumes(store: ShadowStore, volumes: list[KnownVolume]) -> None:
    atomic_write(_volumes_file(store), msgspec.json.encode(volumes), mode=0o600)


def remember_volumes(store: ShadowStore, shadows: Iterable[Shadow]) -> None:
    """Add the volumes of `shadows` that have an image to the known volumes (call under the store's lock)."""
    known = {v.mount_point: v for v in known_volumes(store)}
    changed = False
    for shadow in shadows:
        if not shadow.provider or shadow.path == shadow.volume:  # no image (the live provider)
            continue
        old = known.get(shadow.volume)
        if old is None or (shadow.fs_uuid and old.fs_uuid != shadow.fs_uuid):
            known[shadow.volume] = KnownVolume(mount_point=shadow.volume, fs_uuid=shadow.fs_uuid)
            changed = True
    if changed:
        _write_volumes(store, list(known.values()))


def remove_orphan_images(store: ShadowStore, volumes: Iterable[str] = ()) -> list[str]:
    """Delete the images no set of this store knows; returns their paths.

    Looked for on the volumes this store has made shadows on (while each is mounted with the same
    filesystem) and on `volumes`, by each provider in its own place and naming only (`found_images`,
    each provider asked once for all the volumes: a listing reaps, and each lvs scans every device).
    Runs under the store's lock, so no creator can record a new set meanwhile.
    """
    removed: list[str] = []
    with store.locked():
        known_ids = set(store.ids()) | set(store.intent_ids())
        searched = _volumes_to_search(store, volumes)
        for provider in all_providers():
            removed.extend(_remove_orphans_of(provider, searched, known_ids))
    return removed


def _remove_orphans_of(provider: Provider, volumes: list[Volume], known_ids: set[str]) -> list[str]:
    """The provider's orphans on `volumes`, asked once for all of them (lvm: one lvs), deleted."""
    try:
        found = provider.found_images_on(volumes)
    except OSError as err:
        where = ", ".join(v.mount_point for v in volumes)
        log.warning("cannot look for %s shadows on %s: %s", provider.name, where, err)
        return []
    removed = []
    for image in found:
        if image.set_id in known_ids:
            continue
        try:
            provider.delete(image.shadow)
        except ShadowvaultError as err:
            log.warning("cannot delete orphan shadow %s: %s", image.shadow.path, err)
            continue
        log.info("deleted %s: a shadow of set %s, which no longer exists", image.shadow.path, image.set_id)
        removed.append(image.shadow.path)
    return removed


def _volumes_to_search(store: ShadowStore, extra: Iterable[str]) -> list[Volume]:
    """The mounted volumes to look for orphans on; forgets known volumes that are gone and unused."""
    mounted = {v.mount_point: v for v in list_volumes(with_uuid=False)}
    known = known_volumes(store)
    in_use = {s.volume for m in store.list() for s in m.shadows}
    kept, chosen = [], {}
    for entry in known:
        volume = mounted.get(entry.mount_point)
        same_fs = volume is not None and (
            not entry.fs_uuid or filesystem_uuid(volume.device) in (entry.fs_uuid, None)
        )
        if volume is not None and same_fs:
            chosen[entry.mount_point] = msgspec.structs.replace(volume, fs_uuid=entry.fs_uuid)
        if same_fs or entry.mount_point in in_use:
            kept.append(entry)
    if len(kept) != len(known):
        _write_volumes(store, kept)
    for mount_point in extra:
        volume = mounted.get(os.path.realpath(mount_point))
        if volume is not None and volume.mount_point not in chosen:
            chosen[volume.mount_point] = volume
    return list(chosen.values())
