"""Which host files a `--verify-boot` may hand to the guest: only what every user of the machine may read.

A stored command line names host files the guest then reads: a kernel, an initrd, firmware, a CD
image, an option ROM, an fw_cfg blob. Whoever wrote the repository chose those names, and QEMU
runs as root, so `-drive file=/etc/shadow` or `-device e1000,romfile=/root/.ssh/id_ed25519` would
give a hostile guest the host's secrets (and its console is shown to the user). The rule: a file
the boot reads is a regular file (a directory for `-L`) that any unprivileged user could read
through every directory above it, or one of the boot's own overlays. Block devices, sockets,
network block drivers and QEMU's `json:`/protocol names are refused.
"""

from __future__ import annotations

import os
import stat

from shadowvault.vm.disks import BLOCK_DEVICE_DRIVERS, NETWORK_DRIVERS

# options whose whole value is one host file the guest reads
FILE_OPTIONS = {
    "-kernel", "-initrd", "-dtb", "-bios", "-option-rom", "-cdrom", "-hda", "-hdb", "-hdc", "-hdd",
    "-fda", "-fdb", "-pflash", "-mtdblock", "-sd",
}  # fmt: skip
# the keys of each option's `key=value` pairs that name a host file (a -blockdev's `file` names a node)
FILE_KEYS = {
    "-drive": {"file", "filename"},
    "-blockdev": {"filename"},
    "-fw_cfg": {"file"},
    "-smbios": {"file"},
    "-device": {"romfile", "kernel", "initrd", "file", "filename"},
    "-global": {"romfile", "kernel", "initrd", "file", "filename"},
}
FOREIGN_DRIVERS = {*NETWORK_DRIVERS, *BLOCK_DEVICE_DRIVERS}


def unreadable_reason(path: str, *, directory: bool = False) -> str | None:
    """Why the boot may not read `path` (None: every user of this machine could read it)."""
    full = os.path.abspath(path)
    try:
        info = os.stat(full)
    except OSError:
        return "is not a file on this machine"
    kind_ok = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        return "is not a directory" if directory else "is not a regular file"
    needed = stat.S_IROTH | (stat.S_IXOTH if directory else 0)
    if info.st_mode & needed != needed:
        return "is not readable by every user"
    parent = os.path.dirname(os.path.realpath(full))
    while True:
        try:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return f"lies under {parent}, which not every user may enter"
        except OSError:
            return "is not a file on this machine"
        if parent == os.path.dirname(parent):
            return None
        parent = os.path.dirname(parent)


def key_reason(option: str, key: str, value: str, overlays: set[str]) -> str | None:
    """Why one `key=value` of `option` may not stand (None: it reads nothing it should not)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "driver" and value in FOREIGN_DRIVERS:
        return f"opens {value}, which is not a file"
    if leaf not in FILE_KEYS.get(option, ()) or not value or value in overlays:
        return None
    if leaf == "romfile" and "/" not in value:
        return None  # a ROM from QEMU's own data directory
    return unreadable_reason(value)
