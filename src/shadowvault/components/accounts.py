"""Accounts and groups of a root tree: read passwd/group/shadow/gshadow, record them, recreate them elsewhere.

A restore into another machine (a new laptop, a fresh install) must recreate accounts by NAME: the
old uid may belong to someone else there. `AccountDb` edits the four files of a target root directly
(no chroot, no NSS, so it works on any tree, even an empty directory), keeps every line it does not
understand, writes atomically with the original owner and mode, and leaves a `NAME-` backup like
the shadow tools do. `ensure_accounts` creates what is missing and returns the uid/gid mapping that
the restore uses to chown files.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from shadowvault.errors import UsageError
from shadowvault.fsutil import atomic_write

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


class ShadowEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The /etc/shadow fields after the name (kept as text: empty fields mean "not set")."""

    password: str = "!"
    last_change: str = ""
    min_days: str = ""
    max_days: str = ""
    warn_days: str = ""
    inactive_days: str = ""
    expire: str = ""
    reserved: str = ""


class UserRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Everything needed to recreate one account on another machine."""

    name: str
    uid: int
    gid: int
    group: str | None = None  # name of the primary group, so it can be found by name elsewhere
    groups: list[str] = []  # supplementary groups, by name
    gecos: str = ""
    home: str = ""
    shell: str = ""
    shadow: ShadowEntry | None = None  # only when the backup could read /etc/shadow (root)


class GroupRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    gid: int
    members: list[str] = []
    gshadow_password: str | None = None  # None: no gshadow line was readable


class AccountsDocument(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The account records a component stores with a backup (accounts.json)."""

    users: list[UserRecord] = []
    groups: list[GroupRecord] = []
    shadow_included: bool = False

    def user(self, name: str) -> UserRecord | None:
        return next((u for u in self.users if u.name == name), None)

    def group(self, name: str) -> GroupRecord | None:
        return next((g for g in self.groups if g.name == name), None)


def encode_document(doc: msgspec.Struct) -> bytes:
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def decode_accounts(data: bytes) -> AccountsDocument:
    return msgspec.json.decode(data, type=AccountsDocument)


# ---------------------------------------------------------------------------------------- file model


@dataclass
class _Line:
    """One line of a colon file; `fields` is None for lines we keep verbatim (comments, NIS +/-)."""

    raw: str
    fields: list[str] | None

    @property
    def name(self) -> str | None:
        return self.fields[0] if self.fields else None

    def text(self) -> str:
        return ":".join(self.fields) if self.fields is not None else self.raw


@dataclass
class _ColonFile:
    path: Path
    width: int
    lines: list[_Line] = field(default_factory=list)
    exists: bool = False
    dirty: bool = False

    @classmethod
    def load(cls, path: Path, width: int) -> _ColonFile:
        table = cls(path=path, width=width)
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except (FileNotFoundError, PermissionError):
            return table  # shadow/gshadow are unreadable without root: no records, not an error
        table.exists = True
        for raw in text.splitlines():
            parts = raw.split(":")
            keep = not raw.strip() or raw.startswith(("#", "+", "-")) or len(parts) < width
            table.lines.append(_Line(raw, None if keep else parts))
        return table

    def entries(self) -> list[list[str]]:
        return [line.fields for line in self.lines if line.fields is not None]

    def find(self, name: str) -> list[str] | None:
        return next((line.fields for line in self.lines if line.name == name), None)

    def append(self, fields: list[str]) -> None:
        self.lines.append(_Line("", fields))
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
            gid = _gid_in_group_file(self.path.parent / "group", default_group, fallback=0)
        data = "".join(line.text() + "\n" for line in self.lines).encode("utf-8", errors="surrogateescape")
        atomic_write(self.path, data, mode=mode, durable=True)
        if os.geteuid() == 0:
            os.chown(self.path, uid, gid)
        self.exists, self.dirty = True, False


def _gid_in_group_file(group_file: Path, name: str, fallback: int) -> int:
    table = _ColonFile.load(group_file, 4)
    fields = table.find(name)
    return int(fields[2]) if fields else fallback


def _int(text: str, default: int = -1) -> int:
    try:
        return int(text)
    except ValueError:
        return default


# ---------------------------------------------------------------------------------------- the database


class AccountDb:
    """The accounts of one root tree (its /etc/passwd, group, shadow, gshadow and login.defs)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        etc = self.root / "etc"
        self.passwd = _ColonFile.load(etc / "passwd", 7)
        self.group = _ColonFile.load(etc / "group", 4)
        self.shadow = _ColonFile.load(etc / "shadow", 9)
        self.gshadow = _ColonFile.load(etc / "gshadow", 4)
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
        gid_names = {_int(f[2]): f[0] for f in self.group.entries()}
        memberships: dict[str, list[str]] = {}
        for fields in self.group.entries():
            for member in filter(None, fields[3].split(",")):
                memberships.setdefault(member, []).append(fields[0])
        records = []
        for f in self.passwd.entries():
            shadow_fields = self.shadow.find(f[0])
            shadow = None
            if shadow_fields is not None:
                padded = [*shadow_fields[1:], *[""] * 8][:8]
                shadow = ShadowEntry(**dict(zip(ShadowEntry.__struct_fields__, padded, strict=True)))
            records.append(
                UserRecord(
                    name=f[0],
                    uid=_int(f[2]),
                    gid=_int(f[3]),
                    group=gid_names.get(_int(f[3])),
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
                    gid=_int(f[2]),
                    members=[m for m in f[3].split(",") if m],
                    gshadow_password=gshadow[1] if gshadow else None,
                )
            )
        return records

    def user(self, name: str) -> UserRecord | None:
        return next((u for u in self.users() if u.name == name), None)

    def uid_of(self, name: str) -> int | None:
        fields = self.passwd.find(name)
        return _int(fields[2]) if fields else None

    def gid_of(self, name: str) -> int | None:
        fields = self.group.find(name)
        return _int(fields[2]) if fields else None

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

    def _taken_uids(self) -> set[int]:
        return {_int(f[2]) for f in self.passwd.entries()}

    def _taken_gids(self) -> set[int]:
        return {_int(f[2]) for f in self.group.entries()}

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
        gid = self._free_id(self._taken_gids(), preferred_gid, *self._range("GID", system))
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
        uid = self._free_id(self._taken_uids(), record.uid, *self._range("UID", system))
        self.passwd.append([record.name, "x", str(uid), str(gid), record.gecos, record.home, record.shell])
        shadow = record.shadow or ShadowEntry(password="!", last_change=str(int(time.time() // 86400)))
        self.shadow.append([record.name, *(getattr(shadow, f) for f in ShadowEntry.__struct_fields__)])
        log.info("created account %s (uid %d) in %s", record.name, uid, self.root)
        return uid

    def save(self) -> None:
        self.group.save(0o644)
        self.gshadow.save(0o640, default_group="shadow")
        self.passwd.save(0o644)
        self.shadow.save(0o640, default_group="shadow")


# ---------------------------------------------------------------------------------------- mapping


@dataclass
class IdMap:
    """Source uid/gid -> target uid/gid, by name; what a restore uses to chown."""

    uids: dict[int, int] = field(default_factory=dict)
    gids: dict[int, int] = field(default_factory=dict)
    created_users: list[str] = field(default_factory=list)
    created_groups: list[str] = field(default_factory=list)
    missing_users: list[str] = field(default_factory=list)
    missing_groups: list[str] = field(default_factory=list)
    changed_ids: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (old, new)

    def uid(self, uid: int) -> int:
        return self.uids.get(uid, uid)

    def gid(self, gid: int) -> int:
        return self.gids.get(gid, gid)


@dataclass
class AccountChange:
    """One planned account/group change, for the plan printed by --dry-run."""

    kind: str  # user | group | member
    name: str
    action: str  # create | leave | add
    detail: str = ""


def plan_accounts(
    source: AccountsDocument, target: AccountDb, users: list[str], *, create: bool = True
) -> tuple[list[AccountChange], IdMap]:
    """Decide which accounts/groups to create in `target` for `users`, and the resulting id mapping.

    Runs on an in-memory copy: nothing is written until `apply_accounts` with the same arguments.
    """
    scratch = AccountDb(target.root)
    return _merge(source, scratch, users, create=create)


def apply_accounts(
    source: AccountsDocument, target: AccountDb, users: list[str], *, create: bool = True
) -> tuple[list[AccountChange], IdMap]:
    changes, idmap = _merge(source, target, users, create=create)
    target.save()
    return changes, idmap


def _merge(
    source: AccountsDocument, target: AccountDb, users: list[str], *, create: bool
) -> tuple[list[AccountChange], IdMap]:
    changes: list[AccountChange] = []
    idmap = IdMap()
    records = [source.user(n) for n in users]
    unknown = [n for n, r in zip(users, records, strict=True) if r is None]
    if unknown:
        raise UsageError(f"no account record for {', '.join(unknown)} in the backup")
    wanted_groups: list[str] = []
    for rec in records:
        assert rec is not None
        for g in [rec.group, *rec.groups]:
            if g and g not in wanted_groups:
                wanted_groups.append(g)
    # ids that are free in the target are handed out first, so a collision cannot steal another's id
    taken_gids = target._taken_gids()
    wanted_groups.sort(key=lambda n: (g := source.group(n)) is None or g.gid in taken_gids)
    for name in wanted_groups:
        src = source.group(name)
        existing = target.gid_of(name)
        if existing is not None:
            changes.append(AccountChange("group", name, "leave", f"exists (gid {existing})"))
            if src is not None:
                idmap.gids[src.gid] = existing
            continue
        if not create:
            idmap.missing_groups.append(name)
            continue
        preferred = src.gid if src else None
        system = src is not None and src.gid < target.limits["GID_MIN"]
        gid = target.add_group(
            name, preferred, system=system, gshadow_password=src.gshadow_password if src else None
        )
        idmap.created_groups.append(name)
        if src is not None:
            idmap.gids[src.gid] = gid
            if gid != src.gid:
                idmap.changed_ids[f"group:{name}"] = (src.gid, gid)
        changes.append(
            AccountChange(
                "group",
                name,
                "create",
                f"gid {gid}" + (f" (was {src.gid}, taken)" if src and gid != src.gid else ""),
            )
        )
    taken_uids = target._taken_uids()
    for rec in sorted(records, key=lambda r: r is not None and r.uid in taken_uids):
        assert rec is not None
        existing = target.uid_of(rec.name)
        if existing is not None:
            idmap.uids[rec.uid] = existing
            changes.append(AccountChange("user", rec.name, "leave", f"exists (uid {existing})"))
        elif not create:
            idmap.missing_users.append(rec.name)
            continue
        else:
            primary_gid = target.gid_of(rec.group) if rec.group else None
            if primary_gid is None:
                primary_gid = idmap.gid(rec.gid)
            system = rec.uid < target.limits["UID_MIN"]
            uid = target.add_user(rec, gid=primary_gid, system=system)
            idmap.uids[rec.uid] = uid
            idmap.created_users.append(rec.name)
            if uid != rec.uid:
                idmap.changed_ids[f"user:{rec.name}"] = (rec.uid, uid)
            changes.append(
                AccountChange(
                    "user",
                    rec.name,
                    "create",
                    f"uid {uid}" + (f" (was {rec.uid}, taken)" if uid != rec.uid else ""),
                )
            )
        for g in rec.groups:
            if target.add_member(g, rec.name):
                changes.append(AccountChange("member", f"{rec.name} -> {g}", "add"))
    return changes, idmap


def source_owner_map(source: AccountsDocument, target: AccountDb) -> IdMap:
    """Map every source uid/gid whose NAME exists in the target to the target's id (files component)."""
    idmap = IdMap()
    for u in source.users:
        uid = target.uid_of(u.name)
        if uid is None:
            idmap.missing_users.append(u.name)
        else:
            idmap.uids[u.uid] = uid
    for g in source.groups:
        gid = target.gid_of(g.name)
        if gid is None:
            idmap.missing_groups.append(g.name)
        else:
            idmap.gids[g.gid] = gid
    return idmap
