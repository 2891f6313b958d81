"""fstab handling for a restore onto other disks: device names are the source machine's.

A source fstab names its filesystems by UUID (or LABEL, PARTUUID, /dev path); on a new disk those are
different. `fix_fstab` keeps the source's mount points and options and takes each device from the
target: its current fstab entry for the same mount point, or the filesystem mounted there now.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from shadowvault import proc
from shadowvault.disk.fstab import DEVICE_PREFIXES, entries, parse_fstab
from shadowvault.errors import CommandError

log = logging.getLogger(__name__)


def mounted_uuid(path: Path) -> str | None:
    """The UUID of the filesystem mounted exactly at `path`, if one is (read from the device)."""
    from shadowvault.shadow.volumes import list_volumes

    where = os.path.realpath(path)
    for volume in list_volumes(with_uuid=False):
        if volume.mount_point == where and volume.device.startswith("/dev/"):
            try:
                out = proc.output(
                    ["blkid", "-p", "-o", "value", "-s", "UUID", volume.device], timeout=10, check=False
                ).strip()
            except CommandError:
                return None
            return out or None
    return None


def fix_fstab(source_text: str, target_text: str, target_root: Path) -> tuple[str, list[str]]:
    """The source fstab with devices taken from the target; returns (text, notes for the plan)."""
    target_specs = {e.mount_point: e.spec for e in entries(target_text)}
    notes: list[str] = []
    lines = []
    for item in parse_fstab(source_text):
        if isinstance(item, str):
            lines.append(item)
            continue
        if item.spec.startswith(DEVICE_PREFIXES):
            old = item.spec
            if item.mount_point in target_specs:
                item.spec = target_specs[item.mount_point]
            else:
                where = target_root / item.mount_point.lstrip("/")
                uuid = mounted_uuid(where) if item.mount_point.startswith("/") else None
                if uuid:
                    item.spec = f"UUID={uuid}"
            if item.spec != old:
                notes.append(f"{item.mount_point}: {old} -> {item.spec}")
            else:
                notes.append(f"{item.mount_point}: {old} kept (no device for it in the target)")
        lines.append(item.line())
    return "\n".join(lines) + "\n", notes
