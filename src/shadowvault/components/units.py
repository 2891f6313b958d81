"""systemd unit states of a root, read from /etc/systemd/system (no systemctl, any root works).

Enabled units are symlinks in `*.wants/` and `*.requires/` (and aliases); masked ones are symlinks to
/dev/null; a unit whose file has an [Install] section but no link anywhere is disabled. Restoring
recreates exactly the recorded links, masks, and removes links for units the source had disabled
(a package installed in the target may have enabled them by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

ETC_UNITS = "etc/systemd/system"
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target", ".mount", ".automount", ".slice")


class UnitLink(msgspec.Struct, kw_only=True):
    path: str  # relative to the root ("etc/systemd/system/multi-user.target.wants/foo.service")
    target: str  # what the link points at, verbatim


class UnitsDocument(msgspec.Struct, kw_only=True):
    links: list[UnitLink] = []  # enablement links and aliases
    masked: list[str] = []  # unit names linked to /dev/null
    disabled: list[str] = []  # units with an [Install] section and no link


def _has_install_section(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    section = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and line.split("=", 1)[0].strip() in ("WantedBy", "RequiredBy", "Alias"):
            return True
    return False


def read_units(root: Path) -> UnitsDocument:
    doc = UnitsDocument()
    etc = root / ETC_UNITS
    if etc.is_dir():
        for dirpath, dirnames, filenames in os.walk(etc):
            base = Path(dirpath)
            for name in sorted(filenames + dirnames):
                path = base / name
                if not path.is_symlink():
                    continue
                target = os.readlink(path)
                rel = path.relative_to(root).as_posix()
                if target == "/dev/null":
                    doc.masked.append(name)
                else:
                    doc.links.append(UnitLink(path=rel, target=target))
    linked = {Path(link.path).name for link in doc.links} | {Path(link.target).name for link in doc.links}
    installable: set[str] = set()
    for unit_dir in UNIT_DIRS:
        directory = root / unit_dir
        if not directory.is_dir() or (unit_dir.startswith("lib") and (root / "lib").is_symlink()):
            continue
        for path in directory.iterdir():
            if path.name.endswith(UNIT_SUFFIXES) and not path.is_symlink() and _has_install_section(path):
                installable.add(path.name)
    doc.disabled = sorted(u for u in installable - linked - set(doc.masked) if not _template_used(u, linked))
    doc.links.sort(key=lambda link: link.path)
    doc.masked.sort()
    return doc


def _template_used(unit: str, linked: set[str]) -> bool:
    """`getty@.service` counts as enabled when `getty@tty1.service` is linked."""
    if "@." not in unit:
        return False
    prefix, suffix = unit.split("@.", 1)
    return any(name.startswith(prefix + "@") and name.endswith("." + suffix) for name in linked)


def links_to(root: Path, unit: str) -> list[Path]:
    """Enablement links in `root` that enable `unit` (by link name or by what they point at)."""
    etc = root / ETC_UNITS
    found: list[Path] = []
    if not etc.is_dir():
        return found
    for child in etc.iterdir():
        if child.is_dir() and not child.is_symlink() and child.name.endswith((".wants", ".requires")):
            for link in child.iterdir():
                if link.is_symlink() and (link.name == unit or Path(os.readlink(link)).name == unit):
                    found.append(link)
    return sorted(found)
