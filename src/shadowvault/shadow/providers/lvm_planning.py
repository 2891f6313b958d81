"""Planning an lvm shadow: the logical volume under a volume, whether LVM can snapshot it here, and
how much of its volume group's free space a classic snapshot gets (`[lvm] snapshot_share`).

All of it is read before the freeze: inside it the provider runs only lvcreate (each lvs scans
every device).
"""

from __future__ import annotations

import os

from shadowvault import config_file
from shadowvault.errors import ConfigError, ProviderError
from shadowvault.shadow.providers.lvm_commands import MOUNT_OPTIONS, SNAPSHOT_LV
from shadowvault.shadow.providers.lvm_volumes import LogicalVolume, dm_uuid, logical_volume_of
from shadowvault.shadow.volumes import Volume

DEFAULT_SNAPSHOT_SHARE = 0.20


def snapshot_share() -> float:
    """`[lvm] snapshot_share`: the share of the volume group's free space a classic snapshot gets.

    A number in (0, 1] or a percentage string ("20%"); default 20 %.
    """
    value = config_file.section("lvm").get("snapshot_share", DEFAULT_SNAPSHOT_SHARE)
    share: float | None = None
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            share = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        share = float(value)
    if share is None or not 0 < share <= 1:
        raise ConfigError(
            f"{config_file.config_path()}: [lvm] snapshot_share must be a share of the free space "
            f'between 0 and 1 or a percentage like "20%", not {value!r}'
        )
    return share


def snapshot_percent() -> int:
    """`snapshot_share()` in whole percent (at least 1), as lvcreate's `--extents N%FREE` takes it."""
    return max(1, round(snapshot_share() * 100))


def classic_extents(origin: LogicalVolume) -> int:
    """How many of its volume group's free extents (as lvs read them) a classic snapshot of `origin` gets."""
    return extents_in_turn(origin.vg_free_extents, 0)


def extents_in_turn(free_extents: int, turn: int) -> int:
    """The extents the classic snapshot made `turn`-th (0: first) in its volume group gets: each takes
    its share of what the ones before it left (`-l N%FREE` when its lvcreate runs)."""
    percent = snapshot_percent()
    for _ in range(turn):
        free_extents -= free_extents * percent // 100
    return free_extents * percent // 100


def crowded_out_reason(volume: Volume, origin: LogicalVolume, turn: int) -> str | None:
    """Why the classic snapshot of `origin` gets no extent after `turn` others of the same set in its
    volume group took their shares; None when it gets one (so a set that cannot fit is refused when
    it is planned, not when its lvcreates run inside the freeze)."""
    if turn == 0 or extents_in_turn(origin.vg_free_extents, turn) >= 1:
        return None
    others = "other classic snapshot" if turn == 1 else f"{turn} other classic snapshots"
    return (
        f"provider lvm cannot shadow {volume.mount_point}: volume group {origin.vg} has "
        f"{human(origin.vg_free_extents * origin.vg_extent_size)} free, and after the set's {others} "
        f"there took their shares, a classic snapshot of {origin.full_name} gets {snapshot_percent()} % "
        f"of what is left ([lvm] snapshot_share), less than one extent ({human(origin.vg_extent_size)}): "
        "free space in the volume group, raise the share, or shadow fewer volumes of it in one set"
    )


def out_of_space_reason(volume: Volume, origin: LogicalVolume) -> str:
    """Why the lvcreate of a classic snapshot found no room although planning did: the volume group,
    and the free space the snapshot needs (its share of it must be at least one extent)."""
    percent = snapshot_percent()
    needed = -(-100 // percent) * origin.vg_extent_size
    was = human(origin.vg_free_extents * origin.vg_extent_size)
    return (
        f"volume group {origin.vg} has no room left for the lvm snapshot of {volume.mount_point} "
        f"({origin.full_name}): it needs at least {human(needed)} free (a classic snapshot gets "
        f"{percent} % of it, [lvm] snapshot_share, at least one extent of {human(origin.vg_extent_size)}); "
        f"{was} was free when the set was planned, and other snapshots or programs took it since: free "
        "space in the volume group and try again"
    )


def human(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def origin_of(volume: Volume) -> tuple[LogicalVolume | None, str | None]:
    """The volume's logical volume, or why the lvm provider cannot use it (read afresh)."""
    prefix = f"provider lvm cannot shadow {volume.mount_point}"
    uuid = dm_uuid(volume.dev)
    if uuid is None or not uuid.startswith("LVM-"):
        return None, f"{prefix}: it is not on an LVM logical volume"
    if volume.fstype not in MOUNT_OPTIONS:
        return None, f"{prefix}: it is {volume.fstype}; LVM snapshots are mounted for ext2/3/4 and XFS only"
    if os.geteuid() != 0:
        return None, f"{prefix}: LVM snapshots need root"
    try:
        lv = logical_volume_of(volume.dev)
    except ProviderError as err:
        return None, f"{prefix}: {err}"
    if lv is None:
        return None, f"{prefix}: LVM does not list its device {volume.dev}"
    if lv.is_snapshot and SNAPSHOT_LV.match(lv.name):
        return None, f"{prefix}: it is a Shadowvault snapshot ({lv.full_name}) itself"
    if not lv.is_thin and lv.attr[:1] not in ("-", "o"):
        return None, f"{prefix}: {lv.full_name} is a {lv.segtype} volume, which LVM cannot snapshot here"
    if not lv.is_thin and classic_extents(lv) < 1:
        return None, (
            f"{prefix}: volume group {lv.vg} has {human(lv.vg_free_extents * lv.vg_extent_size)} free, "
            f"and a classic snapshot of {lv.full_name} gets {snapshot_percent()} % of it ([lvm] "
            f"snapshot_share), less than one extent ({human(lv.vg_extent_size)}): free space in "
            "the volume group or raise the share"
        )
    return lv, None
