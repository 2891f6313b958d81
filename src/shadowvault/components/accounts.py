"""Accounts and groups of a root tree: record them, recreate them elsewhere, map owners by name.

A restore into another machine (a new laptop, a fresh install) must recreate accounts by NAME: the
old uid may belong to someone else there. The records are in account_records, the database of a
root tree (its passwd, group, shadow, gshadow, written the way the shadow tools do) in account_db;
`plan_accounts`/`apply_accounts` here decide and make what is missing and return the uid/gid
mapping that the restore uses to chown files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shadowvault.components.account_db import NOLOGIN_SHELLS, AccountDb
from shadowvault.components.account_records import (
    AccountsDocument,
    GroupRecord,
    ShadowEntry,
    UserRecord,
    decode_accounts,
    encode_document,
)
from shadowvault.errors import UsageError

__all__ = [
    "NOLOGIN_SHELLS",
    "AccountChange",
    "AccountDb",
    "AccountsDocument",
    "GroupRecord",
    "IdMap",
    "ShadowEntry",
    "UserRecord",
    "apply_accounts",
    "decode_accounts",
    "encode_document",
    "plan_accounts",
    "source_owner_map",
]


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
    taken_gids = target.taken_gids()
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
    taken_uids = target.taken_uids()
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
