"""The commands the lvm provider runs on snapshots (lvcreate, lvremove, mount, umount), and their names.

Each goes through `proc` with LVM_TIMEOUT and raises ProviderError in words for the user. A snapshot
LV is named `sv-<set id>-<index>` in its origin's volume group; nothing else is ever removed.
"""

from __future__ import annotations

import re

from shadowvault import proc
from shadowvault.errors import CommandError, ProviderError
from shadowvault.shadow.providers.base import image_name
from shadowvault.shadow.providers.lvm_volumes import LogicalVolume

LV_PREFIX = "sv-"
SNAPSHOT_LV = re.compile(rf"^{LV_PREFIX}(?P<image>.+)$")
# ro, and no journal replay (ext2/3/4) or a second mount of the origin's UUID (XFS).
MOUNT_OPTIONS = {"ext2": "ro,noload", "ext3": "ro,noload", "ext4": "ro,noload", "xfs": "ro,nouuid"}
LVM_TIMEOUT = 120.0  # an lvcreate is never killed half-way: it may hold the origin suspended


def lv_name(set_id: str, index: int) -> str:
    """The snapshot LV of shadow `index` of set `set_id`."""
    return LV_PREFIX + image_name(set_id, index)


def mapper_path(vg: str, lv: str) -> str:
    """/dev/mapper's name for `vg/lv` (device-mapper doubles the dashes within each name)."""
    return f"/dev/mapper/{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def create_snapshot(origin: LogicalVolume, name: str, percent: int) -> None:
    """lvcreate snapshot `name` of `origin`: thin (no size), or classic with `percent`% of the free extents.

    A share of what is free when lvcreate runs (an earlier snapshot of the same set may have taken
    some), in whole percent as lvcreate takes it. CommandError (the caller words it) if it fails.
    """
    argv = ["lvcreate", "--quiet", "--snapshot", "--name", name]
    if origin.is_thin:
        argv += ["--setactivationskip", "n"]
    else:
        argv += ["--extents", f"{percent}%FREE"]
    proc.run([*argv, origin.full_name], timeout=LVM_TIMEOUT)


def out_of_space(err: CommandError) -> bool:
    """Whether a failed lvcreate found too few free extents (its share of them is none, or fewer than
    it asked for): someone took them after the set was planned."""
    said = str(err).lower()
    return "0 extents" in said or "insufficient free space" in said or "insufficient suitable" in said


def remove_snapshot(vg: str, name: str) -> None:
    """lvremove `vg/name`; one that is already gone is not an error."""
    try:
        proc.run(["lvremove", "--quiet", "--yes", f"{vg}/{name}"], timeout=LVM_TIMEOUT)
    except CommandError as err:
        if "failed to find" not in str(err).lower() and "not found" not in str(err).lower():
            raise ProviderError(f"cannot remove the lvm snapshot {vg}/{name}: {err}") from err


def mount_snapshot(fstype: str, device: str, target: str) -> None:
    """Mount the snapshot `device` read-only at `target` with the options its filesystem needs."""
    try:
        proc.run(["mount", "-t", fstype, "-o", MOUNT_OPTIONS[fstype], device, target], timeout=LVM_TIMEOUT)
    except CommandError as err:
        raise ProviderError(f"cannot mount the lvm snapshot {device} at {target}: {err}") from err


def unmount_snapshot(target: str) -> None:
    try:
        proc.run(["umount", target], timeout=LVM_TIMEOUT)
    except CommandError as err:
        raise ProviderError(f"cannot unmount the lvm snapshot at {target}: {err}") from err
