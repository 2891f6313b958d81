"""The accounts of one root tree: read passwd/group/shadow/gshadow and login.defs, add accounts.

`AccountDb` edits the four files of a target root directly (no chroot, no NSS, so it works on any
tree, even an empty directory); see colon_files for how the files are kept and written.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from shadowvault.components.account_records import (
    AccountsDocument,
    GroupRecord,
    ShadowEntry,
    UserRecord,
    shadow_entry,
    shadow_fields,
)
from shadowvault.components.colon_files import ColonFile, to_int
from shadowvault.errors import UsageError

log = logging.getLogger(__name__)

NOLOGIN_SHELLS = frozenset(
    {"", "/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false", "/bin/sync", "/usr/bin/sync"}
)
DEFAULT_LIMITS = {
    "UID_MIN": 1000,
    "UID_MAX": 60000,
    "GID_MIN": 1000,
    "GID_MAX": 60000,
    "SYS_UID_MIN": 100,
    "SYS_UID_MAX": 999,
    "SYS_GID_MIN": 100,
    "SYS_GID_MAX": 999,
}


class AccountDb:
    """The accounts of one root tree (its /etc/passwd, group, shadow, gshadow and login.defs)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        etc = self.root / "etc"
        self.passwd = ColonFile.load(etc / "passwd", 7)
        self.group = ColonFile.load(etc / "group", 4)
        self.shadow = ColonFile.load(etc / "shadow", 9)
        self.gshadow = ColonFile.load(etc / "gshadow", 4)
        self.limits = dict(DEFAULT_LIMITS)
        self._read_login_defs(etc / "login.defs")

    def _read_login_defs(self, path: Path) -> None:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in self.limits and parts[1].isdigit():
                self.limits[parts[0]] = int(parts[1])

    # ----- reading

    def users(self) -> list[UserRecord]:
        gid_names = {to_int(f[2]): f[0] for f in self.group.entries()}
        memberships: dict[str, list[str]] = {}
        for fields in self.group.entries():
            for member in filter(None, fields[3].split(",")):
                memberships.setdefault(member, []).append(fields[0])
        records = []
        for f in self.passwd.entries():
            shadow_fields_of = self.shadow.find(f[0])
            shadow = None
            if shadow_fields_of is not None:
                shadow = shadow_entry(shadow_fields_of[1:])
            records.append(
                UserRecord(
                    name=f[0],
                    uid=to_int(f[2]),
                    gid=to_int(f[3]),
                    group=gid_names.get(to_int(f[3])),
                    groups=memberships.get(f[0], []),
                    gecos=f[4],
                    home=f[5],
                    shell=f[6],
                    shadow=shadow,
                )
            )
        return records

    def groups(self) -> list[GroupRecord]:
        records = []
        for f in self.group.entries():
            gshadow = self.gshadow.find(f[0])
            records.append(
                GroupRecord(
                    name=f[0],
                    gid=to_int(f[2]),
                    members=[m for m in f[3].split(",") if m],
                    gshadow_password=gshadow[1] if gshadow else None,
                )
            )
        return records

    def user(self, name: str) -> UserRecord | None:
        return next((u for u in self.users() if u.name == name), None)

    def uid_of(self, name: str) -> int | None:
        fields = self.passwd.find(name)
        return to_int(fields[2]) if fields else None

    def gid_of(self, name: str) -> int | None:
        fields = self.group.find(name)
        return to_int(fields[2]) if fields else None

    def is_human(self, user: UserRecord) -> bool:
        """An account a person logs into: uid in [UID_MIN, UID_MAX] and a login shell."""
        return (
            self.limits["UID_MIN"] <= user.uid <= self.limits["UID_MAX"] and user.shell not in NOLOGIN_SHELLS
        )

    def human_users(self) -> list[UserRecord]:
        return [u for u in self.users() if self.is_human(u)]

    def document(self, names: list[str] | None = None) -> AccountsDocument:
        """The records of `names` (every account when None) and of the groups they belong to."""
        users = self.users()
        groups = self.groups()
        if names is not None:
            wanted = set(names)
            users = [u for u in users if u.name in wanted]
            group_names = {g for u in users for g in [u.group, *u.groups] if g}
            groups = [g for g in groups if g.name in group_names]
        return AccountsDocument(users=users, groups=groups, shadow_included=self.shadow.exists)

    # ----- allocation

    def _free_id(self, taken: set[int], preferred: int | None, low: int, high: int) -> int:
        if preferred is not None and preferred >= 0 and preferred not in taken:
            return preferred
        for candidate in range(low, high + 1):
            if candidate not in taken:
                return candidate
        raise UsageError(f"no free id left between {low} and {high} in {self.root}/etc")

    def taken_uids(self) -> set[int]:
        return {to_int(f[2]) for f in self.passwd.entries()}

    def taken_gids(self) -> set[int]:
        return {to_int(f[2]) for f in self.group.entries()}

    def _range(self, kind: str, system: bool) -> tuple[int, int]:
        prefix = "SYS_" if system else ""
        return self.limits[f"{prefix}{kind}_MIN"], self.limits[f"{prefix}{kind}_MAX"]

    # ----- changes

    def add_group(
        self,
        name: str,
        preferred_gid: int | None,
        *,
        system: bool = False,
        gshadow_password: str | None = None,
    ) -> int:
        """Create group `name` (the preferred gid if free, else the next free one); return its gid."""
        existing = self.gid_of(name)
        if existing is not None:
            return existing
        gid = self._free_id(self.taken_gids(), preferred_gid, *self._range("GID", system))
        self.group.append([name, "x", str(gid), ""])
        if self.gshadow.exists or self.shadow.exists:
            self.gshadow.append([name, gshadow_password or "!", "", ""])
        log.info("created group %s (gid %d) in %s", name, gid, self.root)
        return gid

    def add_member(self, group: str, user: str) -> bool:
        """Add `user` to `group`'s member list (group and gshadow); True if it was not there."""
        fields = self.group.find(group)
        if fields is None:
            return False
        members = [m for m in fields[3].split(",") if m]
        if user in members:
            return False
        fields[3] = ",".join([*members, user])
        self.group.dirty = True
        gfields = self.gshadow.find(group)
        if gfields is not None:
            gmembers = [m for m in gfields[3].split(",") if m]
            if user not in gmembers:
                gfields[3] = ",".join([*gmembers, user])
                self.gshadow.dirty = True
        return True

    def add_user(self, record: UserRecord, *, gid: int, system: bool = False) -> int:
        """Create the account of `record` (its uid if free, else a new one); return the uid."""
        existing = self.uid_of(record.name)
        if existing is not None:
            return existing
        uid = self._free_id(self.taken_uids(), record.uid, *self._range("UID", system))
        self.passwd.append([record.name, "x", str(uid), str(gid), record.gecos, record.home, record.shell])
        shadow = record.shadow or ShadowEntry(password="!", last_change=str(int(time.time() // 86400)))
        self.shadow.append([record.name, *shadow_fields(shadow)])
        log.info("created account %s (uid %d) in %s", record.name, uid, self.root)
        return uid

    def save(self) -> None:
        self.group.save(0o644)
        self.gshadow.save(0o640, default_group="shadow")
        self.passwd.save(0o644)
        self.shadow.save(0o640, default_group="shadow")
