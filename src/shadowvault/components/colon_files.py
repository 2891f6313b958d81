"""The colon files of /etc (passwd, group, shadow, gshadow), edited in place the way the shadow tools do.

Every line that is not understood (comments, NIS `+`/`-` entries, short lines) is kept verbatim; a
changed file is written atomically with its original owner and mode, and the old one is kept as
`NAME-`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from shadowvault.fsutil import atomic_write


@dataclass
class Line:
    """One line of a colon file; `fields` is None for lines we keep verbatim (comments, NIS +/-)."""

    raw: str
    fields: list[str] | None

    @property
    def name(self) -> str | None:
        return self.fields[0] if self.fields else None

    def text(self) -> str:
        return ":".join(self.fields) if self.fields is not None else self.raw


@dataclass
class ColonFile:
    path: Path
    width: int
    lines: list[Line] = field(default_factory=list)
    exists: bool = False
    dirty: bool = False

    @classmethod
    def load(cls, path: Path, width: int) -> ColonFile:
        table = cls(path=path, width=width)
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except (FileNotFoundError, PermissionError):
            return table  # shadow/gshadow are unreadable without root: no records, not an error
        table.exists = True
        for raw in text.splitlines():
            parts = raw.split(":")
            keep = not raw.strip() or raw.startswith(("#", "+", "-")) or len(parts) < width
            table.lines.append(Line(raw, None if keep else parts))
        return table

    def entries(self) -> list[list[str]]:
        return [line.fields for line in self.lines if line.fields is not None]

    def find(self, name: str) -> list[str] | None:
        return next((line.fields for line in self.lines if line.name == name), None)

    def append(self, fields: list[str]) -> None:
        self.lines.append(Line("", fields))
        self.dirty = True

    def save(self, default_mode: int, default_group: str | None = None) -> None:
        """Write atomically, keeping the old file as NAME- and its owner and mode."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        uid, gid, mode = 0, 0, default_mode
        if self.exists:
            st = self.path.stat()
            uid, gid, mode = st.st_uid, st.st_gid, st.st_mode & 0o7777
            shutil.copy2(self.path, self.path.with_name(self.path.name + "-"))
        elif default_group is not None:
            gid = gid_in_group_file(self.path.parent / "group", default_group, fallback=0)
        data = "".join(line.text() + "\n" for line in self.lines).encode("utf-8", errors="surrogateescape")
        atomic_write(self.path, data, mode=mode, durable=True)
        if os.geteuid() == 0:
            os.chown(self.path, uid, gid)
        self.exists, self.dirty = True, False


def gid_in_group_file(group_file: Path, name: str, fallback: int) -> int:
    table = ColonFile.load(group_file, 4)
    fields = table.find(name)
    return int(fields[2]) if fields else fallback


def to_int(text: str, default: int = -1) -> int:
    try:
        return int(text)
    except ValueError:
        return default
