"""Mounts below the paths of a backup: which are read (and how), and which are skipped and why.

A shadow of a volume shows the mount points inside it as empty directories, while a live walk
crosses into them: without a rule the same layout would back up differently on the root filesystem
and on a shadowed volume. The rule: a mount below a requested path is read, through its own shadow
where it can have one, unless `--one-file-system`; kernel filesystems that hold no stored files
(proc, sysfs, ...) are never read. Whatever is skipped is said, and noted in the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shadowvault.paths_within import is_within
from shadowvault.shadow.providers.base import SHADOW_DIR_NAME
from shadowvault.shadow.volumes import Volume

# filesystems the kernel makes up: nothing in them is data a backup keeps, and reading some never ends
PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "sysfs",
        "tracefs",
    }
)


@dataclass
class NestedMounts:
    """The mounts strictly below the requested paths: to read, and skipped with the reason."""

    read: list[Volume] = field(default_factory=list)  # outermost first
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (mount point, why)

    def notes(self) -> list[str]:
        """One line per skipped mount, for the warnings and the manifest."""
        return [
            f"{mount}: mounted inside the backed-up paths, not read ({why})" for mount, why in self.skipped
        ]


def find_nested(
    paths: Iterable[bytes],
    volumes: list[Volume],
    *,
    one_file_system: bool,
    left_out: Callable[[str], bool] = lambda _path: False,
) -> NestedMounts:
    """The mounts below `paths` (not the paths' own volumes); `left_out` paths (excluded, the
    repository) are neither read nor reported. Shadow directories and what is mounted in them never count."""
    wanted = [os.fsdecode(p) for p in paths]
    found = NestedMounts()
    for volume in sorted(volumes, key=lambda v: v.mount_point):
        mount = volume.mount_point
        if not any(is_within(mount, p) and mount != p for p in wanted):
            continue
        if f"/{SHADOW_DIR_NAME}/" in f"{mount}/" or left_out(mount):
            continue
        if any(is_within(mount, skipped) for skipped, _ in found.skipped):
            continue  # below a mount that is not read: not reached at all
        if volume.fstype in PSEUDO_FILESYSTEMS:
            found.skipped.append((mount, f"{volume.fstype} holds no stored files"))
        elif one_file_system:
            found.skipped.append((mount, "--one-file-system"))
        else:
            found.read.append(volume)
    return found
