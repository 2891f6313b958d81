"""Files fanotify cannot guard: those already open for writing, or shared-mapped, when the mark was placed.

Since Linux 6.14 a file decides at open whether it raises permission and pre-content events: one
opened before any such mark existed on its filesystem never does (checked on this kernel: a pwrite
through a descriptor opened before the mark raised no event). A database holding its files open
would change them behind our back. So, once the mark is placed and while the volume is still
frozen, every process's descriptors and shared mappings are scanned; the inodes on the volume that
are open for writing or mapped shared are saved whole before the thaw.

Not seen by the scan: a descriptor in flight in a Unix socket at that instant, and files registered
with io_uring whose descriptor was closed. Both are rare; they are listed in the provider's notes.
"""

from __future__ import annotations

import os

_ACCESS_MODE = 0o3
_READ_ONLY = 0


def _proc_pids() -> list[str]:
    return [name for name in os.listdir("/proc") if name.isdigit()]


def _fdinfo(pid: str, fd: str) -> dict[str, int]:
    """flags (octal), mnt_id and ino of a descriptor, from its fdinfo (no stat: a stuck FUSE hangs one)."""
    info: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("flags", "mnt_id", "ino"):
                    info[key] = int(value.strip(), 8 if key == "flags" else 10)
    except (OSError, ValueError):
        pass
    return info


def mount_ids(dev: int) -> tuple[set[int], set[int]]:
    """(ids of the mounts of filesystem `dev`, ids of every mount) in our mount namespace."""
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    ours: set[int] = set()
    every: set[int] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            every.add(int(fields[0]))
            if fields[2] == wanted:
                ours.add(int(fields[0]))
    return ours, every


def _on_volume(
    pid: str, fd: str, info: dict[str, int], dev: int, mounts: tuple[set[int], set[int]]
) -> int | None:
    """The inode of the descriptor if it is a file on the volume, else None."""
    ours, every = mounts
    mnt_id = info.get("mnt_id")
    if mnt_id in ours and "ino" in info:
        return info["ino"]
    if mnt_id in every:
        return None
    try:  # a mount of another namespace (a container): ask the file itself
        st = os.stat(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    return st.st_ino if st.st_dev == dev else None


def _written_through_fds(pid: str, dev: int, mounts: tuple[set[int], set[int]]) -> set[int]:
    found: set[int] = set()
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return found
    for fd in fds:
        info = _fdinfo(pid, fd)
        ino = _on_volume(pid, fd, info, dev, mounts)
        if ino is None:
            continue
        flags = info.get("flags")
        if flags is None or flags & _ACCESS_MODE != _READ_ONLY:
            found.add(ino)
    return found


def _shared_mappings(pid: str, dev: int) -> set[int]:
    found: set[int] = set()
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}"
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) >= 5 and "s" in parts[1] and parts[3] == wanted:
                    found.add(int(parts[4]))
    except OSError:
        pass
    return found


def unguarded_inodes(dev: int, skip_pid: int) -> set[int]:
    """Inodes of filesystem `dev` open for writing or mapped shared by any process but `skip_pid`."""
    found: set[int] = set()
    mounts = mount_ids(dev)
    for pid in _proc_pids():
        if int(pid) == skip_pid:
            continue
        found |= _written_through_fds(pid, dev, mounts)
        found |= _shared_mappings(pid, dev)
    return found
