"""Small fake machine roots (etc/passwd, group, shadow, gshadow, homes) for component tests."""

from __future__ import annotations

import os
from pathlib import Path

BASE_USERS = [
    ("root", 0, 0, "root", "/root", "/bin/bash"),
    ("daemon", 1, 1, "daemon", "/usr/sbin", "/usr/sbin/nologin"),
    ("nobody", 65534, 65534, "nobody", "/nonexistent", "/usr/sbin/nologin"),
]
BASE_GROUPS = [
    ("root", 0, ""),
    ("daemon", 1, ""),
    ("shadow", 42, ""),
    ("crontab", 101, ""),
    ("users", 100, ""),
    ("nogroup", 65534, ""),
]


def make_root(
    root: Path, users: list[tuple[str, int, int, str, str, str]] = (), groups: list[tuple[str, int, str]] = ()
) -> Path:
    """A tree with the four account files; `users` are (name, uid, gid, gecos, home, shell)."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    all_users = [*BASE_USERS, *users]
    all_groups = [*BASE_GROUPS, *groups]
    (etc / "passwd").write_text("".join(f"{n}:x:{u}:{g}:{c}:{h}:{s}\n" for n, u, g, c, h, s in all_users))
    (etc / "group").write_text("".join(f"{n}:x:{g}:{m}\n" for n, g, m in all_groups))
    (etc / "shadow").write_text("".join(f"{u[0]}:$y$hash-{u[0]}:19000:0:99999:7:::\n" for u in all_users))
    (etc / "gshadow").write_text("".join(f"{n}:!::{m}\n" for n, _, m in all_groups))
    os.chmod(etc / "shadow", 0o640)
    os.chmod(etc / "gshadow", 0o640)
    return root


def passwd_entry(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def group_entry(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc" / "group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None
