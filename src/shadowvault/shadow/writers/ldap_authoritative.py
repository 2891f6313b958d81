"""Authoritative restore of LDAP entries: the backup's subtree wins over the replicas' newer state.

A replicated directory (syncrepl) treats a restored database as stale: the newer state on its
partners wins, which is what a non-authoritative restore wants. To bring back an entry deleted or
damaged by mistake on every server, the backup's copy must look newer than anything the partners
hold, as Active Directory's authoritative restore raises version numbers. Here the entries of the
requested subtrees are taken from the LDIF kept in the backup, stripped of their change stamps
(entryCSN, entryUUID, timestamps, ...) and written to the running server with ldapadd/ldapmodify:
slapd gives them fresh stamps, and syncrepl carries them out to every partner.

An entry gone from the server is added again (parents first); one that differs gets its attributes
replaced with the backup's (and those the backup lacks deleted) in one modify; one that equals the
backup is left alone. Entries created below the subtree after the backup stay: only restored
entries win. plan_authoritative reads and checks everything first (a bad DN, or one not in the
backup, changes nothing); apply_authoritative writes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard

from shadowvault import proc
from shadowvault.directory import ldap_dn
from shadowvault.directory.ldif import Entry, LdifError, add_record, modify_record, parse_entries
from shadowvault.directory.slapd_replication import DatabaseSettings, database_settings
from shadowvault.errors import CommandError, UsageError, WriterError
from shadowvault.process_table import option_value, processes
from shadowvault.shadow.manifest import Component

log = logging.getLogger(__name__)

# Stamps and computed attributes the server sets itself: left out so the re-added entry gets new ones.
OPERATIONAL = frozenset(
    name.lower()
    for name in (
        "entryCSN", "entryUUID", "createTimestamp", "modifyTimestamp", "creatorsName", "modifiersName",
        "structuralObjectClass", "contextCSN", "entryDN", "subschemaSubentry", "hasSubordinates",
        "numSubordinates", "memberOf", "pwdChangedTime", "pwdAccountLockedTime", "pwdFailureTime",
        "pwdHistory", "pwdGraceUseTime", "pwdLastSuccess", "authTimestamp",
    )
)  # fmt: skip


def kept_ldif(meta: dict[str, Any]) -> bytes | None:
    """The LDIF export the ldap writer kept in a component's metadata (zstd, base64), if it kept one;
    LdifError when it cannot be unpacked (the manifest is read from the repository: hostile input)."""
    if not meta.get("ldif"):
        return None
    try:
        return zstandard.ZstdDecompressor().decompress(
            base64.b64decode(meta["ldif"], validate=True),
            max_output_size=int(meta.get("ldif_bytes", 0)) or 1 << 34,
        )
    except (binascii.Error, zstandard.ZstdError, TypeError, ValueError) as err:
        raise LdifError(f"{_damaged(meta)}: it cannot be unpacked ({err})") from None


def kept_entries(meta: dict[str, Any]) -> list[Entry] | None:
    """The entries of the kept LDIF export (None when none was kept); LdifError naming the suffix,
    the line and the entry when it is not LDIF."""
    ldif = kept_ldif(meta)
    if ldif is None:
        return None
    try:
        return parse_entries(ldif)
    except LdifError as err:
        raise LdifError(f"{_damaged(meta)}: {err}") from None


def _damaged(meta: dict[str, Any]) -> str:
    return f"the backup's LDIF export of {meta.get('suffix') or 'its database'} is damaged"


def user_attributes(entry: Entry) -> dict[str, list[bytes]]:
    return {k: v for k, v in entry.attributes.items() if k.split(";", 1)[0] not in OPERATIONAL}


# ------------------------------------------------------------ the running server


@dataclass
class Directory:
    """The running slapd to write to: its URL and how to bind (simple with a password, or SASL EXTERNAL)."""

    url: str
    bind_dn: str = ""
    password: str | None = None  # with bind_dn: a simple bind
    password_file: str | None = None  # with bind_dn: a simple bind, the password read by the tool

    @contextlib.contextmanager
    def _bind(self) -> Iterator[list[str]]:
        if not self.bind_dn:
            yield ["-Y", "EXTERNAL", "-Q"]
            return
        if self.password_file:
            yield ["-x", "-D", self.bind_dn, "-y", self.password_file]
            return
        with tempfile.TemporaryDirectory(prefix="sv-ldap-") as tmp:
            path = os.path.join(tmp, "password")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.password or "")
            yield ["-x", "-D", self.bind_dn, "-y", path]

    def search(self, base: str, scope: str = "sub") -> list[Entry]:
        """The entries at and below `base` (their user attributes); none when `base` does not exist."""
        with self._bind() as bind:
            argv = ["ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-H", self.url, *bind]
            done = proc.run(
                [*argv, "-b", base, "-s", scope, "(objectClass=*)", "*"], check=False, timeout=300
            )
        if done.returncode == 32:  # noSuchObject
            return []
        if done.returncode != 0:
            raise WriterError(f"cannot read {base} from {self.url}: {_reason(done.stderr)}")
        return parse_entries(done.stdout)

    def modify(self, ldif: str) -> None:
        with self._bind() as bind:
            proc.run(["ldapmodify", "-H", self.url, *bind], input=ldif.encode(), timeout=3600)


def _reason(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


def listening_urls(config: str) -> list[str]:
    """The URLs (-h) of the running slapd serving `config`; empty when none runs."""
    wanted = os.path.realpath(config)
    for p in processes({"slapd"}):
        named = option_value(p.argv, "-f") or option_value(p.argv, "-F")
        if named and os.path.realpath(named) == wanted:
            return (option_value(p.argv, "-h") or "ldap:///").split()
    return []


def directory_for(config: str, settings: DatabaseSettings, options: dict[str, Any], label: str) -> Directory:
    """Where and how to write: options url / bind_dn / password_file, else the running slapd as its rootdn."""
    url = options.get("url")
    if not url:
        if settings.role == "consumer":
            raise UsageError(
                f"{label} is a read-only syncrepl consumer (of {', '.join(settings.providers)}): run the "
                "authoritative restore on its provider, or name it with --writer-option "
                "ldap.url=URL (and ldap.bind_dn, ldap.password_file)"
            )
        urls = listening_urls(config)
        if not urls:
            raise UsageError(
                f"{label}: slapd is not running: an authoritative restore writes to the running "
                "directory so the entries replicate (start it, or --writer-option ldap.url=URL)"
            )
        url = next((u for u in urls if u.startswith("ldapi://")), urls[0])
    if options.get("bind_dn"):
        return Directory(url, str(options["bind_dn"]), password_file=options.get("password_file"))
    if settings.rootdn and settings.rootpw and not settings.rootpw.startswith("{"):
        return Directory(url, settings.rootdn, password=settings.rootpw)
    if url.startswith("ldapi://"):
        return Directory(url)  # SASL EXTERNAL: root over the local socket, as Debian's cn=config allows
    raise UsageError(
        f"{label}: give --writer-option ldap.bind_dn=DN and ldap.password_file=FILE to write to {url}"
    )


# ------------------------------------------------------------ plan and apply


@dataclass
class EntryAction:
    """What happens to one entry of the backup."""

    dn: str  # as the backup spells it
    action: str  # "add" (gone from the server) | "rewrite" (differs) | "keep" (equals the backup)
    attributes: list[str] = field(default_factory=list)  # rewrite: the attributes that change
    record: str = ""  # the LDIF change record ldapmodify runs


@dataclass
class AuthoritativePlan:
    """An authoritative restore of `requested` on the server at `directory`, decided before any write."""

    label: str
    requested: list[str]
    role: str  # of the instance: standalone | provider | consumer | multi-provider
    directory: Directory
    actions: list[EntryAction]

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.action == action)

    def lines(self) -> list[str]:
        return authoritative_plan_lines(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "writer": self.label,
            "mode": "authoritative",
            "requested": self.requested,
            "role": self.role,
            "url": self.directory.url,
            "entries": [{"dn": a.dn, "action": a.action, "attributes": a.attributes} for a in self.actions],
        }


def authoritative_plan_lines(plan: dict[str, Any]) -> list[str]:
    """The plan for people, from its JSON form (the daemon sends plans as JSON)."""
    head = f"{plan['writer']}: authoritative restore of {', '.join(plan['requested'])} on {plan['url']}"
    out = [f"{head} ({plan['role']})"]
    for entry in plan["entries"]:
        if entry["action"] == "add":
            out.append(f"  add {entry['dn']}")
        elif entry["action"] == "rewrite":
            out.append(f"  rewrite {entry['dn']}: {', '.join(entry['attributes'])}")
        else:
            out.append(f"  keep {entry['dn']} (as in the backup)")
    return out


def _backup_entries(components: list[Component], requested: list[str], label: str) -> dict[str, Entry]:
    """The backup's entries at and below each requested DN (normalized DN -> entry), parents first."""
    bases = [(dn, ldap_dn.normalize(dn)) for dn in requested]  # BadDn: one line, before anything is read
    suffixes = {ldap_dn.normalize(c.metadata["suffix"]): c for c in components if c.metadata.get("suffix")}
    chosen: dict[str, Entry] = {}
    for dn, base in bases:
        component = next((c for s, c in suffixes.items() if ldap_dn.within(base, s)), None)
        if component is None:
            held = ", ".join(c.metadata.get("suffix", "?") for c in components)
            raise UsageError(f"{dn} is not in the backup: {label} holds {held}")
        entries = kept_entries(component.metadata)
        if entries is None:
            note = component.metadata.get("ldif_note", "the backup kept no LDIF export")
            raise UsageError(f"{dn}: an authoritative restore needs the backup's LDIF export ({note})")
        below = {_backup_dn(e.dn, component.metadata): e for e in entries}
        found = {n: e for n, e in below.items() if ldap_dn.within(n, base)}
        if base not in found:
            raise UsageError(f"{dn} is not in the backup (of {component.metadata['suffix']})")
        chosen.update(found)
    return dict(sorted(chosen.items(), key=lambda item: len(ldap_dn.rdns(item[0]))))


def _backup_dn(dn: str, meta: dict[str, Any]) -> str:
    """The normal form of a DN read from the backup: one that is not a DN means the export is damaged."""
    try:
        return ldap_dn.normalize(dn)
    except ldap_dn.BadDn as err:
        raise LdifError(f"{_damaged(meta)}: an entry's {err}") from None


def _action(entry: Entry, live: Entry | None) -> EntryAction:
    wanted = user_attributes(entry)
    if live is None:
        return EntryAction(entry.dn, "add", sorted(wanted), add_record(Entry(entry.dn, wanted)))
    present = user_attributes(live)
    replace = {k: v for k, v in wanted.items() if sorted(v) != sorted(present.get(k, []))}
    delete = [k for k in present if k not in wanted]
    if not replace and not delete:
        return EntryAction(entry.dn, "keep")
    return EntryAction(
        entry.dn, "rewrite", sorted([*replace, *delete]), modify_record(entry.dn, replace, delete)
    )


def plan_authoritative(
    components: list[Component], requested: list[str], *, config: str, label: str, options: dict[str, Any]
) -> AuthoritativePlan:
    """Read the backup's entries and the server's, decide per entry; nothing is written."""
    if not requested:
        raise UsageError("--authoritative wants the DN of an entry or subtree to restore")
    backup = _backup_entries(components, requested, label)
    suffix = next((c.metadata.get("suffix", "") for c in components), "")
    settings = database_settings(config, suffix)
    directory = directory_for(config, settings, options, label)
    live: dict[str, Entry] = {}
    for dn in requested:
        live.update((ldap_dn.normalize(e.dn), e) for e in directory.search(dn))
    actions = [_action(entry, live.get(normal)) for normal, entry in backup.items()]
    for normal, action in zip(backup, actions, strict=True):
        above = ldap_dn.parent(normal)
        if action.action != "add" or not above or above in live or above in backup:
            continue
        if not directory.search(above, scope="base"):
            raise UsageError(
                f"{action.dn} cannot come back: its parent {above} is not on the server "
                "(restore the parent too: --authoritative with its DN)"
            )
        live[above] = Entry(above)
    return AuthoritativePlan(label, list(requested), settings.role, directory, actions)


def apply_authoritative(plan: AuthoritativePlan) -> None:
    """Write the plan's adds and rewrites in one ldapmodify (parents first): fresh stamps, replicated out."""
    records = [a.record for a in plan.actions if a.action != "keep"]
    if not records:
        return
    try:
        plan.directory.modify("\n".join(records))
    except CommandError as err:
        raise WriterError(f"{plan.label}: the authoritative restore stopped: {err}") from err
    log.info(
        "authoritative restore on %s: %d added, %d rewritten",
        plan.directory.url,
        plan.count("add"),
        plan.count("rewrite"),
    )
