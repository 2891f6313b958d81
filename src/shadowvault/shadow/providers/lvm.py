"""The lvm provider: an LVM snapshot of the logical volume under a filesystem, mounted read-only.

A classic snapshot (`lvcreate -s -l N%FREE`) gets `[lvm] snapshot_share` (default 20 %, whole
percent) of the volume group's free extents when lvcreate runs, rounded down (LVM caps it at what the
origin can use); a share under one extent is refused when the set is planned. A thin volume gets a
thin snapshot (`lvcreate -s --setactivationskip n`), which needs no size.

LVM suspends the device for the snapshot, which freezes the filesystem on it (freeze_bdev): the
image is filesystem-consistent on its own (FreezePolicy.BUILT_IN). An fsfreeze around it breaks it:
suspending a filesystem someone else froze fails with EBUSY and leaves a half-made snapshot (Debian's
6.1 kernel), so the coordinator refuses the combination. A multi-volume set is taken at one instant
where the kernel allows it (Linux 6.8+: the suspend nests inside a userspace freeze): every
filesystem frozen (lvm_freeze.py), each lvcreate, all thawed, the snapshots mounted. Otherwise (older
kernels, a volume that may not be frozen) each lvcreate suspends its own, one after another, and the
set says so (docs/lvm-provider.md).

The snapshot LV is named `sv-<set id>-<index>` and mounted at `<mount>/.shadowvault/<set id>-<index>`
(ro, `noload` for ext2/3/4 so no journal is replayed, `nouuid` for XFS, whose origin has the same
UUID). A classic snapshot that overflows is dropped by the kernel while its old mount may still serve
cached pages: `problem()` says so, and whoever reads a shadow must ask it afterwards.

This module is the provider; lvm_planning.py reads the origin and sizes a classic snapshot,
lvm_commands.py runs lvcreate/lvremove/mount, lvm_volumes.py reads lvs, lvm_freeze.py freezes a set.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections.abc import Sequence

from shadowvault.errors import CommandError, ProviderError, ShadowUncheckedError, UnsupportedError, UsageError
from shadowvault.shadow.freeze_rules import check_may_freeze
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import (
    IMAGE_NAME,
    WHOLE_VOLUMES,
    FoundImage,
    FreezePolicy,
    Provider,
    ReadScope,
    image_name,
)
from shadowvault.shadow.providers.hidden_dir import ensure_shadow_dir, shadow_dir
from shadowvault.shadow.providers.lvm_commands import (
    LV_PREFIX,
    SNAPSHOT_LV,
    create_snapshot,
    lv_name,
    mapper_path,
    mount_snapshot,
    out_of_space,
    remove_snapshot,
    unmount_snapshot,
)
from shadowvault.shadow.providers.lvm_freeze import GroupFreeze, kernel_nests_freezes
from shadowvault.shadow.providers.lvm_planning import (
    classic_extents,
    crowded_out_reason,
    human,
    origin_of,
    out_of_space_reason,
    snapshot_percent,
)
from shadowvault.shadow.providers.lvm_volumes import (
    LogicalVolume,
    SnapshotState,
    dm_size,
    dm_uuid,
    list_logical_volumes,
    snapshot_states,
)
from shadowvault.shadow.providers.own_images import foreign, own_image_path, own_volume
from shadowvault.shadow.volumes import Volume, list_volumes, volume_of

log = logging.getLogger(__name__)

VG_NAME = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")  # LVM's own rule for names
# What lvcreate itself writes (metadata backups, locks): never on a filesystem frozen around it.
LVM_OWN_PATHS = ("/etc/lvm", "/run/lock/lvm", "/run/lvm")


class LvmProvider(Provider):
    """LVM snapshots (classic or thin) of the logical volume a filesystem is on, mounted read-only."""

    name = "lvm"
    atomic = True
    freeze_policy = FreezePolicy.BUILT_IN
    priority = 25  # after btrfs (a btrfs on LVM is shadowed by btrfs), before reflink and live

    def __init__(self) -> None:
        # Origins as read when the set was planned (device -> LV), so that the commit, inside the
        # freeze window, runs only lvcreate: each lvs scans every device.
        self._planned_origins: dict[str, LogicalVolume] = {}
        self._group: GroupFreeze | None = None  # the freeze of a set being taken together
        # volume group -> devices whose classic snapshots the set plans there, in order: each takes
        # its share of what the ones before it leave
        self._classic_turns: dict[str, list[str]] = {}

    def _origin(self, volume: Volume) -> tuple[LogicalVolume | None, str | None]:
        """The volume's logical volume, or why this provider cannot use it (read afresh, then kept)."""
        lv, reason = origin_of(volume)
        if lv is not None:
            self._planned_origins[volume.dev] = lv
        return lv, reason

    def _planned_origin(self, volume: Volume) -> tuple[LogicalVolume | None, str | None]:
        known = self._planned_origins.get(volume.dev)
        return (known, None) if known is not None else self._origin(volume)

    def unsupported_reason(self, volume: Volume) -> str | None:
        origin, reason = self._origin(volume)
        if origin is None or origin.is_thin:
            return reason
        turns = self._classic_turns.setdefault(origin.vg, [])
        if volume.dev in turns:
            return None
        crowded = crowded_out_reason(volume, origin, len(turns))
        if crowded is None:
            turns.append(volume.dev)
        return crowded

    def passed_over(self, volume: Volume) -> str | None:
        return self.unsupported_reason(volume) if (dm_uuid(volume.dev) or "").startswith("LVM-") else None

    def create(self, volume: Volume, set_id: str, index: int, scope: ReadScope = WHOLE_VOLUMES) -> Shadow:
        shadow, created = self._snapshot(volume, set_id, index)
        self._finish(shadow, volume, created)
        return shadow

    def can_create_together(self, volumes: Sequence[Volume]) -> bool:
        """On Linux 6.8+, when every volume may be frozen and none holds what lvcreate writes."""
        if len(volumes) < 2 or not kernel_nests_freezes():
            return False
        all_volumes = list_volumes(with_uuid=False)
        mounts = {v.mount_point for v in volumes}
        try:
            for volume in volumes:
                check_may_freeze(volume, all_volumes)
        except UsageError as err:
            log.info("lvm: the set's volumes are shadowed one after another: %s", err)
            return False
        for path in LVM_OWN_PATHS:
            if os.path.exists(path) and volume_of(path, all_volumes).mount_point in mounts:
                log.info("lvm: the set's volumes are shadowed one after another: %s is on one", path)
                return False
        return True

    def create_together(
        self, volumes: Sequence[Volume], set_id: str, indices: Sequence[int], limit: float
    ) -> list[Shadow]:
        """Freeze every filesystem, lvcreate each, thaw all, then mount the snapshots."""
        for volume in volumes:
            self._vg(volume)  # any lvs (and any refusal) before the freeze, not inside it
        freeze = GroupFreeze([v.mount_point for v in volumes])
        self._group = freeze
        made: list[tuple[Shadow, Volume]] = []
        try:
            freeze.freeze(limit)
            instant = time.time()  # every filesystem of the set is frozen: their common point in time
            for volume, index in zip(volumes, indices, strict=True):
                if freeze.cancelled:
                    raise ProviderError("the set's lvm snapshots were cancelled")
                # Listed before lvcreate runs: a failed one may leave a half-made snapshot.
                made.append((self._shadow_at(volume, self._vg(volume), image_name(set_id, index)), volume))
                made[-1] = (self._snapshot(volume, set_id, index)[0], volume)
            problems = freeze.thaw()
            if problems:
                raise ProviderError(f"cannot thaw {'; '.join(problems)}")
            for shadow, volume in made:
                self._finish(shadow, volume, instant)
        except BaseException:
            freeze.thaw()
            for shadow, _ in made:
                try:
                    self.delete(shadow)
                except ProviderError as err:
                    log.warning("cannot delete the lvm snapshot of %s: %s", shadow.volume, err)
            raise
        finally:
            self._group = None
        return [shadow for shadow, _ in made]

    def _vg(self, volume: Volume) -> str:
        origin, reason = self._planned_origin(volume)
        if origin is None:
            raise UnsupportedError(reason or f"provider lvm cannot shadow {volume.mount_point}")
        return origin.vg

    def cancel(self) -> None:
        """Thaw a set frozen by create_together at once; it stops before its next lvcreate."""
        group = self._group
        if group is not None:
            group.thaw()

    def _snapshot(self, volume: Volume, set_id: str, index: int) -> tuple[Shadow, float]:
        """lvcreate the snapshot of `volume` (not mounted yet); its shadow and when it was made."""
        origin, reason = self._planned_origin(volume)
        if origin is None:
            raise UnsupportedError(reason or f"provider lvm cannot shadow {volume.mount_point}")
        shadow = self._shadow_at(volume, origin.vg, image_name(set_id, index))
        try:
            create_snapshot(origin, lv_name(set_id, index), snapshot_percent())
        except CommandError as err:
            if not origin.is_thin and out_of_space(err):  # another process took the planned space
                log.info("lvm: %s", err)
                raise ProviderError(out_of_space_reason(volume, origin)) from err
            raise ProviderError(f"lvm snapshot of {volume.mount_point} ({origin.full_name}): {err}") from err
        kind, size = ("thin", 0) if origin.is_thin else ("classic", self._cow_size(shadow, origin))
        shadow.provider_data.update({"kind": kind, "origin": origin.name, "cow_bytes": size})
        if kind == "classic":
            shadow.notes = [
                f"classic LVM snapshot of {origin.full_name} with about {human(size)} for changes: if more "
                f"than that of {volume.mount_point} is rewritten while the shadow exists, the snapshot "
                "becomes invalid and reading it fails"
            ]
        return shadow, time.time()

    @staticmethod
    def _cow_size(shadow: Shadow, origin: LogicalVolume) -> int:
        """The space for changes LVM gave a classic snapshot, read from the kernel (no lvs in the freeze).

        Not the share of the free extents read when the set was planned: an earlier snapshot of the
        set may have taken some since, and LVM cuts a share larger than the origin can use down.
        """
        cow = dm_size(os.path.basename(shadow.provider_data["device"]) + "-cow")
        return cow if cow is not None else classic_extents(origin) * origin.vg_extent_size

    def _finish(self, shadow: Shadow, volume: Volume, created: float) -> None:
        """Mount the snapshot (removed again if that fails) and record when and how it was made."""
        try:
            self._mount(shadow, volume)
        except BaseException:
            self.delete(shadow)
            raise
        shadow.created = created
        shadow.frozen = True  # the suspend froze the filesystem (freeze_bdev), or our group freeze did

    def _mount(self, shadow: Shadow, volume: Volume) -> None:
        ensure_shadow_dir(volume)
        target = shadow.provider_data["mount"]
        device = shadow.provider_data["device"]
        try:
            os.mkdir(target, 0o700)
        except FileExistsError:
            pass
        except OSError as err:
            raise ProviderError(f"cannot create {target}: {err.strerror}") from err
        mount_snapshot(volume.fstype, device, target)

    def planned(self, volume: Volume, set_id: str, index: int) -> Shadow | None:
        origin, _ = self._planned_origin(volume)
        if origin is None:
            return None
        return self._shadow_at(volume, origin.vg, image_name(set_id, index))

    def _shadow_at(self, volume: Volume, vg: str, image: str) -> Shadow:
        target = os.path.join(shadow_dir(volume.mount_point), image)
        path = os.path.join(target, volume.root.lstrip("/")) if volume.root != "/" else target
        lv = LV_PREFIX + image
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=path,
            atomic=True,
            provider_data={
                "vg": vg,
                "lv": lv,
                "mount": target,
                "device": mapper_path(vg, lv),
            },
        )

    def found_images(self, volume: Volume) -> list[FoundImage]:
        return self.found_images_on([volume])

    def found_images_on(self, volumes: Sequence[Volume]) -> list[FoundImage]:
        """Snapshots of the volumes' LVs named `sv-<set id>-<index>`: ours, and nothing else (one lvs)."""
        on_lvm = [v for v in volumes if v.dev and (dm_uuid(v.dev) or "").startswith("LVM-")]
        if not on_lvm:
            return []
        try:
            candidates = list_logical_volumes()
        except ProviderError as err:
            where = ", ".join(v.mount_point for v in on_lvm)
            log.warning("cannot look for lvm snapshots of %s: %s", where, err)
            return []
        found = []
        for volume in on_lvm:
            origin = next((lv for lv in candidates if lv.dev == volume.dev), None)
            if origin is not None:
                found += self._images_of(volume, origin, candidates)
        return found

    def _images_of(
        self, volume: Volume, origin: LogicalVolume, candidates: Sequence[LogicalVolume]
    ) -> list[FoundImage]:
        found = []
        for lv in candidates:
            match = SNAPSHOT_LV.match(lv.name)
            image = IMAGE_NAME.match(match["image"]) if match else None
            same_origin = lv.vg == origin.vg and lv.origin == origin.name
            if match is None or image is None or not same_origin or not lv.is_snapshot:
                continue
            found.append(FoundImage(image["set_id"], self._shadow_at(volume, origin.vg, match["image"])))
        return found

    def delete(self, shadow: Shadow) -> None:
        """Unmount the snapshot (refused while it is exposed elsewhere), lvremove it, remove its directory.

        Without lvs: the mount table names the snapshot's device, and lvremove says when it is gone.
        """
        vg, name, target, device = _own_snapshot(shadow)
        mounts = [v.mount_point for v in list_volumes(with_uuid=False) if v.device == device]
        elsewhere = [m for m in mounts if m != target]
        if elsewhere:
            raise ProviderError(
                f"cannot delete the lvm snapshot {vg}/{name}: it is mounted at {elsewhere[0]}; "
                "unexpose it first"
            )
        if target in mounts:
            unmount_snapshot(target)
        remove_snapshot(vg, name)
        try:
            os.rmdir(target)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
                log.warning("cannot remove %s: %s", target, err.strerror)

    def problem(self, shadow: Shadow) -> str | None:
        return self.problems([shadow])[0]

    def problems(self, shadows: Sequence[Shadow]) -> list[str | None]:
        """One lvs for all of `shadows`: the state of every snapshot of ours on the machine."""
        try:
            states = snapshot_states(LV_PREFIX)
        except ProviderError as err:
            names = ", ".join(f"{_snapshot_name(s)} of {s.volume}" for s in shadows)
            plural = "s" if len(shadows) > 1 else ""
            raise ShadowUncheckedError(f"cannot check the lvm snapshot{plural} {names}: {err}") from err
        return [_problem(shadow, states) for shadow in shadows]


def _own_snapshot(shadow: Shadow) -> tuple[str, str, str, str]:
    """The volume group, LV, mount point and device of the shadow's snapshot, when the record names
    one this provider makes (`sv-<set id>-<index>` mounted at `<volume>/.shadowvault/<set id>-<index>`);
    ForeignImageError else: a record naming `vg0/root` or a mounted filesystem is never acted on."""
    data = shadow.provider_data
    vg, name, target, device = (data.get(key) for key in ("vg", "lv", "mount", "device"))
    if not vg or not name or not target or not device:
        raise ProviderError(f"the record of the lvm shadow of {shadow.volume} names no snapshot")
    if not isinstance(vg, str) or not VG_NAME.match(vg):
        raise foreign(shadow, vg)
    match = SNAPSHOT_LV.match(name) if isinstance(name, str) else None
    if match is None or not IMAGE_NAME.match(match["image"]):
        raise foreign(shadow, name)
    parent = shadow_dir(own_volume(shadow))
    if own_image_path(shadow, target, parent, (IMAGE_NAME,)) != os.path.join(parent, match["image"]):
        raise foreign(shadow, target)
    if device != mapper_path(vg, name):
        raise foreign(shadow, device)
    return vg, name, target, device


def _snapshot_name(shadow: Shadow) -> str:
    return f"{shadow.provider_data.get('vg', '')}/{shadow.provider_data.get('lv', '')}"


def _problem(shadow: Shadow, states: dict[tuple[str, str], SnapshotState]) -> str | None:
    """Why the snapshot of `shadow` no longer holds its point in time (None while it does)."""
    state = states.get((shadow.provider_data.get("vg", ""), shadow.provider_data.get("lv", "")))
    if state is None:
        return f"the lvm snapshot {_snapshot_name(shadow)} of {shadow.volume} no longer exists"
    if state.invalid:
        return (
            f"the lvm snapshot {_snapshot_name(shadow)} of {shadow.volume} overflowed (its space for "
            "changes filled up) and no longer holds the point in time; make a new shadow, with a larger "
            "[lvm] snapshot_share or more free space in the volume group"
        )
    return None
