"""The account records a component stores with a backup (accounts.json): users, groups, shadow fields.

Recreating accounts on another machine goes by NAME (the old uid may belong to someone else
there), so each record keeps the names of its groups next to the ids.
"""

from __future__ import annotations

import msgspec

from shadowvault.typed_decoding import decode_json


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
    return decode_json(data, AccountsDocument)


def shadow_fields(entry: ShadowEntry) -> list[str]:
    """The /etc/shadow fields after the name, in file order."""
    return [
        entry.password,
        entry.last_change,
        entry.min_days,
        entry.max_days,
        entry.warn_days,
        entry.inactive_days,
        entry.expire,
        entry.reserved,
    ]


def shadow_entry(fields: list[str]) -> ShadowEntry:
    """A ShadowEntry from the fields after the name (missing trailing fields are empty)."""
    f = [*fields, *[""] * 8][:8]
    return ShadowEntry(
        password=f[0],
        last_change=f[1],
        min_days=f[2],
        max_days=f[3],
        warn_days=f[4],
        inactive_days=f[5],
        expire=f[6],
        reserved=f[7],
    )
