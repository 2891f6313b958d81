"""The files component: the given paths, restored by item, or migrated to another machine with --map.

Data-only migration keeps owners by NAME: a file that belonged to `www-data` on the old server
belongs to the new server's `www-data`, whatever its uid there. The names come from the source's
account database, stored with the backup (accounts.json, without password hashes). Names the target
does not know keep their number and are reported, or are created with `create_missing_accounts`.
Nothing of the system state (accounts aside, when asked) is touched.
"""

from __future__ import annotations

import grp
import logging
import pwd
from pathlib import Path, PurePosixPath

import msgspec

from shadowvault.components.accounts import (
    AccountDb,
    AccountsDocument,
    GroupRecord,
    IdMap,
    UserRecord,
    apply_accounts,
    decode_accounts,
    encode_document,
    plan_accounts,
    source_owner_map,
)
from shadowvault.components.base import (
    Collection,
    CollectOptions,
    Component,
    Entry,
    RestoreOptions,
    SnapshotView,
)
from shadowvault.components.entries import apply_subtree_actions, plan_subtree
from shadowvault.components.layout import resolve_in_root
from shadowvault.components.plan import Plan
from shadowvault.errors import NotFoundError, UsageError
from shadowvault.paths_within import is_within
from shadowvault.typed_decoding import decode_json

log = logging.getLogger(__name__)


class PathsDocument(msgspec.Struct, kw_only=True):
    paths: list[str] = []


def _normalize(path: str) -> str:
    return PurePosixPath("/" + path.strip("/")).as_posix()


def parse_map(text: str) -> tuple[str, str]:
    """`SRC=DST` as two absolute paths."""
    src, sep, dst = text.partition("=")
    if not sep or not src or not dst:
        raise UsageError(f"--map wants SRC=DST, got {text!r}")
    return _normalize(src), _normalize(dst)


class Files(Component):
    name = "files"
    description = "the given paths, with include/exclude"

    def collect(self, source_root: Path, options: CollectOptions) -> Collection:
        if not options.paths:
            raise UsageError("the files component needs at least one path")
        paths = []
        for path in options.paths:
            absolute = _normalize(path)
            if not resolve_in_root(source_root, absolute).exists():
                raise NotFoundError(f"{absolute} does not exist in {source_root}")
            paths.append(absolute)
        db = AccountDb(source_root)
        accounts = db.document()
        for user in accounts.users:
            user.shadow = None  # data migration never carries password hashes
        accounts.shadow_included = False
        documents = {
            "accounts.json": encode_document(accounts),
            "paths.json": encode_document(PathsDocument(paths=paths)),
        }
        return Collection(self.name, source_root, paths, documents, list(options.excludes))

    # ------------------------------------------------------------------ restore

    def _documents(self, view: SnapshotView) -> tuple[AccountsDocument | None, list[str]]:
        """The stored documents; a plain `backup PATHS` has none: its paths, and owner names from the tree."""
        accounts = view.document(self.name, "accounts.json")
        paths = view.document(self.name, "paths.json")
        if paths is None:
            recorded = view.recorded_paths()
            if not recorded:
                raise NotFoundError("the snapshot has no files documents and no recorded paths")
            return None, [_normalize(p) for p in recorded]
        return (
            decode_accounts(accounts) if accounts is not None else None,
            decode_json(paths, PathsDocument).paths,
        )

    def _sources(self, view: SnapshotView, options: RestoreOptions) -> list[str]:
        _, paths = self._documents(view)
        if not options.includes:
            return paths
        chosen = []
        for include in map(_normalize, options.includes):
            if not any(is_within(include, p) for p in paths):
                raise NotFoundError(f"{include} is not in the snapshot (it has: {', '.join(paths)})")
            chosen.append(include)
        return chosen

    def restore_prefixes(self, view: SnapshotView, options: RestoreOptions) -> list[str]:
        return self._sources(view, options)

    @staticmethod
    def destination(path: str, maps: list[tuple[str, str]]) -> str:
        """Where source `path` goes: the longest matching --map prefix wins."""
        best = max((m for m in maps if is_within(path, m[0])), key=lambda m: len(m[0]), default=None)
        if best is None:
            return path
        src, dst = best
        rest = PurePosixPath(path).relative_to(src) if path != src else PurePosixPath(".")
        return (PurePosixPath(dst) / rest).as_posix()

    def plan(self, view: SnapshotView, options: RestoreOptions) -> Plan:
        stored, _ = self._documents(view)
        target = options.target_root
        plan = Plan(self.name, str(target))
        seen: list[Entry] = []
        sources = self._sources(view, options)
        if target.resolve() == Path("/") and options.maps:  # onto this machine: only where it was told
            unmapped = [s for s in sources if not any(is_within(s, src) for src, _ in options.maps)]
            if unmapped:
                raise UsageError(
                    f"restoring onto this machine writes only mapped paths: give a --map for "
                    f"{', '.join(unmapped)} (or --include the mapped ones, or --target-root DIR)"
                )
        for source in sources:
            dest = self.destination(source, options.maps)
            seen += plan_subtree(
                plan,
                view,
                target,
                source,
                dest,
                existing="replace" if options.overwrite else "leave",
                excludes=options.excludes,
            )
        machine_root = (target / "etc" / "passwd").is_file()
        accounts = stored if stored is not None else _accounts_from_entries(seen)
        plan.data["accounts"] = accounts
        owners = self._owner_names(seen, accounts)
        if machine_root:
            db = AccountDb(target)
            missing = sorted(u for u in owners["users"] if db.uid_of(u) is None)
            missing_groups = sorted(g for g in owners["groups"] if db.gid_of(g) is None)
        else:
            missing = sorted(u for u in owners["users"] if _host_uid(u) is None)
            missing_groups = sorted(g for g in owners["groups"] if _host_gid(g) is None)
        plan.data["machine_root"] = machine_root
        plan.data["owner_users"] = sorted(owners["users"])
        if options.create_missing_accounts and (missing or missing_groups):
            if not machine_root:
                raise UsageError(
                    f"cannot create accounts: {target} has no etc/passwd "
                    "(restore into a machine root, or create them first)"
                )
            changes, _ = plan_accounts(accounts, AccountDb(target), missing)
            for change in changes:
                plan.add(change.action, change.kind, change.name, change.detail)
            for group in missing_groups:
                if not any(a.kind == "group" and a.target == group for a in plan.actions):
                    plan.add("create", "group", group)
            plan.data["create_users"] = missing
            plan.data["create_groups"] = missing_groups
        else:
            if missing:
                plan.warn(
                    f"owners missing in the target, their files keep the old uid: {', '.join(missing)} "
                    "(use --create-missing-accounts to create them)"
                )
            if missing_groups:
                plan.warn(
                    f"groups missing in the target, their files keep the old gid: {', '.join(missing_groups)}"
                )
        return plan

    @staticmethod
    def _owner_names(entries: list[Entry], accounts: AccountsDocument) -> dict[str, set[str]]:
        uid_names = {u.uid: u.name for u in accounts.users}
        gid_names = {g.gid: g.name for g in accounts.groups}
        return {
            "users": {uid_names[e.uid] for e in entries if e.uid in uid_names},
            "groups": {gid_names[e.gid] for e in entries if e.gid in gid_names},
        }

    def apply(self, plan: Plan, view: SnapshotView, options: RestoreOptions) -> Plan:
        accounts: AccountsDocument = plan.data["accounts"]
        target = options.target_root
        if plan.data.get("create_users") or plan.data.get("create_groups"):
            db = AccountDb(target)
            apply_accounts(accounts, db, plan.data.get("create_users", []))
            for name in plan.data.get("create_groups", []):
                group = accounts.group(name)
                db.add_group(name, group.gid if group else None)
            db.save()
        idmap = self._idmap(accounts, target, plan.data.get("machine_root", False))
        apply_subtree_actions(plan, view, target, idmap)
        return plan

    @staticmethod
    def _idmap(accounts: AccountsDocument, target: Path, machine_root: bool) -> IdMap:
        if machine_root:
            return source_owner_map(accounts, AccountDb(target))
        idmap = IdMap()
        for user in accounts.users:
            uid = _host_uid(user.name)
            if uid is not None:
                idmap.uids[user.uid] = uid
        for group in accounts.groups:
            gid = _host_gid(group.name)
            if gid is not None:
                idmap.gids[group.gid] = gid
        return idmap


def _accounts_from_entries(entries: list[Entry]) -> AccountsDocument:
    """Owner records from the names the archive stored with each entry (no accounts.json)."""
    users: dict[str, UserRecord] = {}
    groups: dict[str, GroupRecord] = {}
    for entry in entries:
        if entry.group and entry.group not in groups:
            groups[entry.group] = GroupRecord(name=entry.group, gid=entry.gid)
        if entry.user and entry.user not in users:
            users[entry.user] = UserRecord(
                name=entry.user,
                uid=entry.uid,
                gid=entry.gid,
                group=entry.group,
                home="/nonexistent",
                shell="/usr/sbin/nologin",
            )
    return AccountsDocument(users=list(users.values()), groups=list(groups.values()))


def _host_uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _host_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
