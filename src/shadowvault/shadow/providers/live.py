"""The live provider: no image at all; the requester reads the live volume while writers hold.

For filesystems without a snapshot mechanism here (ext4 until a real provider exists). Only the data
writers hold is consistent; every other file is read as it is at the moment it is read. The shadow
says so (`atomic=False`) and the coordinator writes it in the manifest's notes.

Supported on every volume that holds data, tmpfs included; refused on kernel pseudo filesystems
(proc, sysfs, cgroup, devpts, ...), which hold no data worth a point in time. It ignores fsfreeze:
freezing does not change what a live read sees.
"""

from __future__ import annotations

import time

from shadowvault.errors import UnsupportedError
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import WHOLE_VOLUMES, FreezePolicy, Provider, ReadScope
from shadowvault.shadow.volumes import Volume

PSEUDO_FSTYPES = frozenset(
    {
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "devtmpfs",
        "mqueue",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "hugetlbfs",
        "autofs",
        "binfmt_misc",
        "efivarfs",
        "selinuxfs",
        "rpc_pipefs",
        "nsfs",
        "nfsd",
        "sockfs",
        "pipefs",
        "anon_inodefs",
    }
)


def is_pseudo(volume: Volume) -> bool:
    """A kernel interface mounted as a filesystem, not storage (hidden by `volumes list` without --all)."""
    return volume.fstype in PSEUDO_FSTYPES


class LiveProvider(Provider):
    """The volume itself, read live: not a point in time."""

    name = "live"
    atomic = False
    freeze_policy = FreezePolicy.IGNORES
    priority = 10

    def unsupported_reason(self, volume: Volume) -> str | None:
        if is_pseudo(volume):
            return (
                f"provider live cannot shadow {volume.mount_point}: {volume.fstype} is a kernel "
                "pseudo filesystem, not storage"
            )
        return None

    def create(self, volume: Volume, set_id: str, index: int, scope: ReadScope = WHOLE_VOLUMES) -> Shadow:
        reason = self.unsupported_reason(volume)
        if reason:
            raise UnsupportedError(reason)
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=volume.mount_point,
            atomic=False,
            created=time.time(),
            provider_data={},
        )

    def delete(self, shadow: Shadow) -> None:
        """Nothing to delete: there is no image."""
