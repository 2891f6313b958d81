"""What must differ on the recovered system: fstab devices, and the machine-id when asked.

The filesystems are made with their recorded UUIDs, so a source fstab naming them by UUID is
already right; a device name (/dev/sda1), a label that changed, or a UUID changed through an edited
--layout is rewritten to `UUID=` of the new filesystem. Mount options and the other entries stay.
"""

from __future__ import annotations

from pathlib import Path

from shadowvault.components.layout import resolve_in_root
from shadowvault.disk.fstab import FstabEntry, parse_fstab
from shadowvault.disk.layout import FilesystemRecord
from shadowvault.fsutil import atomic_write


def fix_fstab_text(text: str, filesystems: list[FilesystemRecord]) -> tuple[str, list[str]]:
    """(new fstab, notes): entries of recorded mount points point at the recorded UUIDs."""
    by_mount = {f.mount_point: f for f in filesystems}
    notes, lines = [], []
    for item in parse_fstab(text):
        if isinstance(item, FstabEntry) and item.mount_point in by_mount:
            record = by_mount[item.mount_point]
            keep = item.spec == f"UUID={record.uuid}" or (
                record.label and item.spec == f"LABEL={record.label}"
            )
            if not keep and not item.spec.startswith("PARTUUID="):
                notes.append(f"{item.mount_point}: {item.spec} -> UUID={record.uuid}")
                item.spec = f"UUID={record.uuid}"
            lines.append(item.line())
        else:
            lines.append(item if isinstance(item, str) else item.line())
    return "\n".join(lines) + "\n", notes


def fix_fstab(root: Path, filesystems: list[FilesystemRecord]) -> list[str]:
    path = resolve_in_root(root, "etc/fstab")
    if not path.is_file():
        return ["no /etc/fstab in the restored system"]
    text = path.read_text(errors="replace")
    fixed, notes = fix_fstab_text(text, filesystems)
    if fixed != text and notes:
        atomic_write(path, fixed.encode(), mode=0o644)
    return notes


def reset_machine_id(root: Path) -> None:
    """An empty /etc/machine-id: systemd makes a new one at first boot (a clone must not share it)."""
    path = resolve_in_root(root, "etc/machine-id")
    atomic_write(path, b"", mode=0o444)
    dbus = resolve_in_root(root, "var/lib/dbus/machine-id")
    if dbus.is_file() and not dbus.is_symlink():
        dbus.unlink()
