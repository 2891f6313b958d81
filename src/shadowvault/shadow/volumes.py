"""Volumes: the mounted filesystems of this machine, read from /proc/self/mountinfo."""

from __future__ import annotations

import os

import msgspec

from shadowvault import proc
from shadowvault.errors import CommandError, NotFoundError, UsageError
from shadowvault.paths_within import is_within

MOUNTINFO = "/proc/self/mountinfo"


class Volume(msgspec.Struct, frozen=True, kw_only=True):
    """A mounted filesystem: where it is mounted, what backs it, and what kind it is."""

    mount_point: str
    device: str  # the mount source (/dev/loop3, tmpfs, ...)
    fstype: str
    fs_uuid: str | None = None
    root: str = "/"  # the subtree of the filesystem mounted here (a btrfs subvolume, a bind mount)
    dev: str = ""  # major:minor of the filesystem
    mount_id: int = 0
    options: tuple[str, ...] = ()
    super_options: tuple[str, ...] = ()

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Volume]:
    """Parse the text of a mountinfo file into volumes, in mount order."""
    volumes = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields:
            continue
        sep = fields.index("-")
        volumes.append(
            Volume(
                mount_id=int(fields[0]),
                dev=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                options=tuple(fields[5].split(",")),
                fstype=fields[sep + 1],
                device=_unescape(fields[sep + 2]),
                super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
            )
        )
    return volumes


def _fs_uuid(device: str) -> str | None:
    # Not cached: a loop device is reused for another filesystem as soon as it is detached.
    if not device.startswith("/dev/"):
        return None
    try:
        out = proc.output(["blkid", "-o", "value", "-s", "UUID", device], timeout=10, check=False).strip()
    except CommandError:
        return None
    return out or None


def list_volumes(*, with_uuid: bool = True) -> list[Volume]:
    """Every mounted filesystem visible to this process; the last mount on a path hides earlier ones."""
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        volumes = parse_mountinfo(f.read())
    visible: dict[str, Volume] = {}
    for volume in volumes:
        visible.pop(volume.mount_point, None)
        visible[volume.mount_point] = volume
    result = list(visible.values())
    if with_uuid:
        result = [msgspec.structs.replace(v, fs_uuid=_fs_uuid(v.device)) for v in result]
    return result


def find_volume(mount_point: str) -> Volume:
    """The volume mounted exactly at `mount_point`; a clear error when it is not a mount point."""
    if not os.path.exists(mount_point):
        raise NotFoundError(f"{mount_point}: no such file or directory")
    real = os.path.realpath(mount_point)
    volumes = list_volumes(with_uuid=False)  # blkid for the one found, not for every mount
    for volume in volumes:
        if volume.mount_point == real:
            return msgspec.structs.replace(volume, fs_uuid=_fs_uuid(volume.device))
    holder = volume_of(real, volumes)
    raise UsageError(
        f"{mount_point} is not a mount point (it lies on the volume mounted at {holder.mount_point})"
    )


def volume_of(path: str, volumes: list[Volume] | None = None) -> Volume:
    """The volume that holds `path` (the longest mount point that is a prefix of it); its filesystem
    UUID only when `volumes` carry theirs."""
    real = os.path.realpath(path)
    best: Volume | None = None
    for volume in volumes if volumes is not None else list_volumes(with_uuid=False):
        mp = volume.mount_point
        if is_within(real, mp) and (best is None or len(mp) >= len(best.mount_point)):
            best = volume
    if best is None:
        raise NotFoundError(f"{path}: no mounted filesystem holds it")
    return best
