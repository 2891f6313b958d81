"""fstab as text: its entries (device, mount point, type, options), comments and blank lines kept.

Read when a disk layout is recorded (disk/layout.py) and when a restore rewrites an fstab for other
disks (components/fstab.py, recover/fixes.py).
"""

from __future__ import annotations

from dataclasses import dataclass

DEVICE_PREFIXES = ("UUID=", "PARTUUID=", "LABEL=", "PARTLABEL=", "/dev/")


@dataclass
class FstabEntry:
    spec: str
    mount_point: str
    fstype: str
    options: str = "defaults"
    dump: str = "0"
    passno: str = "0"

    def line(self) -> str:
        return "\t".join((self.spec, self.mount_point, self.fstype, self.options, self.dump, self.passno))


def parse_fstab(text: str) -> list[FstabEntry | str]:
    """Entries, and comments/blank lines kept as strings."""
    out: list[FstabEntry | str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 3:
            out.append(line)
            continue
        out.append(FstabEntry(*fields[:6]))
    return out


def entries(text: str) -> list[FstabEntry]:
    return [e for e in parse_fstab(text) if isinstance(e, FstabEntry)]
