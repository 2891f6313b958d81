"""The package state of a Debian root, read from its files (no dpkg/apt run needed, any root works).

/var/lib/dpkg/status gives installed packages, versions and conffiles with the md5 of the shipped
version; /var/lib/apt/extended_states marks what apt installed automatically. "Manual" packages are
what `apt-mark showmanual` prints: installed and not auto-installed. A conffile whose md5 still
matches its package's is unchanged from the package default: a system-state restore keeps the
target's copy of such a file and only carries over the ones the admin changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

STATUS = "var/lib/dpkg/status"
EXTENDED_STATES = "var/lib/apt/extended_states"


class InstalledPackage(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    version: str
    arch: str = ""
    manual: bool = True


class Conffile(msgspec.Struct, kw_only=True, omit_defaults=True):
    path: str  # absolute, as dpkg records it ("/etc/login.defs")
    package: str
    state: str  # default | modified | removed


class PackagesDocument(msgspec.Struct, kw_only=True):
    packages: list[InstalledPackage] = []
    conffiles: list[Conffile] = []

    def manual(self) -> list[InstalledPackage]:
        return [p for p in self.packages if p.manual]

    def conffile_states(self) -> dict[str, Conffile]:
        return {c.path: c for c in self.conffiles}


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs; continuation lines are joined with newlines."""
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t" and last is not None:
            fields[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            fields[last] = value.strip()
    if fields:
        yield fields


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def auto_installed(root: Path) -> set[tuple[str, str]]:
    auto = set()
    for st in _stanzas(_read(root / EXTENDED_STATES)):
        if st.get("Auto-Installed") == "1":
            auto.add((st.get("Package", ""), st.get("Architecture", "")))
    return auto


def _md5(path: Path) -> str | None:
    try:
        return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None


def read_packages(root: Path) -> PackagesDocument:
    """Installed packages (with manual/auto) and the state of every conffile, from `root`'s files."""
    auto = auto_installed(root)
    doc = PackagesDocument()
    for st in _stanzas(_read(root / STATUS)):
        if not st.get("Status", "").endswith(" installed"):
            continue
        name, arch = st.get("Package", ""), st.get("Architecture", "")
        doc.packages.append(
            InstalledPackage(
                name=name, version=st.get("Version", ""), arch=arch, manual=(name, arch) not in auto
            )
        )
        for line in st.get("Conffiles", "").splitlines():
            parts = line.split()
            if len(parts) < 2 or "obsolete" in parts[2:]:
                continue
            path, shipped = parts[0], parts[1]
            actual = _md5(root / path.lstrip("/"))
            state = "removed" if actual is None else "default" if actual == shipped else "modified"
            doc.conffiles.append(Conffile(path=path, package=name, state=state))
    doc.packages.sort(key=lambda p: p.name)
    return doc


def installed_names(root: Path) -> dict[str, str]:
    """name -> version of what is installed in `root`."""
    return {p.name: p.version for p in read_packages(root).packages}
