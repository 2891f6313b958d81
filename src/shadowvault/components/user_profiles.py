"""The user-profiles component: home directories with their keys, plus the records to recreate accounts.

A profile is the whole home directory (dotfiles and config, ~/.ssh, ~/.gnupg, ~/.pki/nssdb,
keyrings) and the user's crontab, with modes, ACLs and xattrs as they are. The account records
(name, uid, gid, groups, shell, GECOS, and the shadow entry when root runs the backup) go into
accounts.json so a new machine can get the same accounts.

Restore (the "new laptop" scenario): missing accounts and groups are created by name (the old uid
when it is free there, a new one otherwise), homes are laid down owned by the new ids, and an
existing profile is never touched unless `overwrite` is asked for.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

from shadowvault.components.accounts import (
    AccountDb,
    AccountsDocument,
    IdMap,
    apply_accounts,
    decode_accounts,
    encode_document,
    plan_accounts,
)
from shadowvault.components.base import (
    Collection,
    CollectOptions,
    Component,
    RestoreOptions,
    SnapshotView,
)
from shadowvault.components.entries import apply_subtree_actions, plan_subtree, selected
from shadowvault.components.layout import resolve_in_root
from shadowvault.components.plan import Plan
from shadowvault.errors import NotFoundError, UsageError
from shadowvault.typed_decoding import decode_json

log = logging.getLogger(__name__)

CRONTAB_DIR = "var/spool/cron/crontabs"


class Profile(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    home: str
    crontab: bool = False
    crontab_group: str | None = None


class ProfilesDocument(msgspec.Struct, kw_only=True):
    profiles: list[Profile] = []


def account_changes_into(plan: Plan, changes: list) -> None:
    for change in changes:
        verb = {"create": "create", "leave": "leave", "add": "add"}[change.action]
        plan.add(verb, change.kind, change.name, change.detail)


class UserProfiles(Component):
    name = "user-profiles"
    description = "home directories with keys and certificate stores, crontabs, and account records"

    # ------------------------------------------------------------------ backup

    def collect(self, source_root: Path, options: CollectOptions) -> Collection:
        db = AccountDb(source_root)
        if options.users:
            unknown = [u for u in options.users if db.uid_of(u) is None]
            if unknown:
                raise NotFoundError(f"no such account in {source_root}/etc/passwd: {', '.join(unknown)}")
            names = list(options.users)
        else:
            names = [u.name for u in db.human_users()]
        if not names:
            raise NotFoundError(
                f"no human accounts (uid {db.limits['UID_MIN']}-{db.limits['UID_MAX']} "
                f"with a login shell) in {source_root}/etc/passwd; name them with --users"
            )
        accounts = db.document(names)
        paths: list[str] = []
        profiles = []
        for user in accounts.users:
            home = resolve_in_root(source_root, user.home) if user.home else None
            if home is not None and home.is_dir():
                paths.append(user.home)
            else:
                log.warning(
                    "%s: home directory %s does not exist; only the account is kept", user.name, user.home
                )
            crontab = source_root / CRONTAB_DIR / user.name
            crontab_group = None
            if crontab.is_file():
                paths.append(f"/{CRONTAB_DIR}/{user.name}")
                crontab_group = _group_name(db, crontab.stat().st_gid)
            profiles.append(
                Profile(
                    name=user.name, home=user.home, crontab=crontab.is_file(), crontab_group=crontab_group
                )
            )
        # owners of crontab files (the crontab group) must be known by name at restore time
        documents = {
            "accounts.json": encode_document(accounts),
            "profiles.json": encode_document(ProfilesDocument(profiles=profiles)),
        }
        return Collection(self.name, source_root, paths, documents, list(options.excludes))

    # ------------------------------------------------------------------ restore

    def _documents(self, view: SnapshotView) -> tuple[AccountsDocument, ProfilesDocument]:
        accounts = view.document(self.name, "accounts.json")
        profiles = view.document(self.name, "profiles.json")
        if accounts is None or profiles is None:
            raise NotFoundError("the snapshot has no user-profiles documents (accounts.json, profiles.json)")
        return decode_accounts(accounts), decode_json(profiles, ProfilesDocument)

    def _selected(self, profiles: ProfilesDocument, options: RestoreOptions) -> list[Profile]:
        if not options.users:
            return list(profiles.profiles)
        have = {p.name: p for p in profiles.profiles}
        unknown = [u for u in options.users if u not in have]
        if unknown:
            raise NotFoundError(
                f"the snapshot has no profile for {', '.join(unknown)} "
                f"(it has: {', '.join(sorted(have)) or 'none'})"
            )
        return [have[u] for u in options.users]

    def restore_prefixes(self, view: SnapshotView, options: RestoreOptions) -> list[str]:
        accounts, profiles = self._documents(view)
        if options.includes:
            return list(options.includes)
        db = AccountDb(options.target_root)
        prefixes = []
        for profile in self._selected(profiles, options):
            home = resolve_in_root(options.target_root, self._target_home(db, accounts, profile))
            if options.overwrite or not (home.is_dir() and any(home.iterdir())):
                prefixes.append(profile.home)  # an existing profile is left alone: not staged at all
            if profile.crontab:
                prefixes.append(f"/{CRONTAB_DIR}/{profile.name}")
        return prefixes

    def plan(self, view: SnapshotView, options: RestoreOptions) -> Plan:
        accounts, profiles = self._documents(view)
        chosen = self._selected(profiles, options)
        target = options.target_root
        plan = Plan(self.name, str(target))
        db = AccountDb(target)
        changes, idmap = plan_accounts(accounts, db, [p.name for p in chosen], create=True)
        account_changes_into(plan, changes)
        plan.data["users"] = [p.name for p in chosen]
        for profile in chosen:
            home = self._target_home(db, accounts, profile)
            dest = resolve_in_root(target, home)
            if options.includes:  # items picked from a profile: created, or replaced with --overwrite
                plan_subtree(
                    plan,
                    view,
                    target,
                    profile.home,
                    home,
                    includes=options.includes,
                    existing="replace" if options.overwrite else "leave",
                    excludes=options.excludes,
                )
            elif dest.is_dir() and any(dest.iterdir()) and not options.overwrite:
                plan.add(
                    "leave",
                    "profile",
                    home,
                    f"{profile.name}'s profile exists in the target; use --overwrite to replace its files",
                )
            else:
                plan_subtree(
                    plan, view, target, profile.home, home, existing="replace", excludes=options.excludes
                )
            if profile.crontab and selected(f"{CRONTAB_DIR}/{profile.name}", options.includes):
                tab = f"{CRONTAB_DIR}/{profile.name}"
                exists = resolve_in_root(target, tab)
                if exists.exists() and not options.overwrite:
                    plan.add("leave", "crontab", "/" + tab, "exists; use --overwrite to replace it")
                else:
                    plan.add("replace" if exists.exists() else "create", "crontab", "/" + tab, source=tab)
        for name, (old, new) in idmap.changed_ids.items():
            plan.warn(f"{name} gets id {new} in the target ({old} is taken there); files are chowned to it")
        return plan

    @staticmethod
    def _target_home(db: AccountDb, accounts: AccountsDocument, profile: Profile) -> str:
        existing = db.user(profile.name)
        return existing.home if existing is not None and existing.home else profile.home

    def apply(self, plan: Plan, view: SnapshotView, options: RestoreOptions) -> Plan:
        accounts, _ = self._documents(view)
        target = options.target_root
        db = AccountDb(target)
        _, idmap = apply_accounts(accounts, db, plan.data["users"], create=True)
        apply_subtree_actions(plan, view, target, idmap)
        self._apply_crontabs(plan, view, target, idmap, AccountDb(target))
        return plan

    def _apply_crontabs(
        self, plan: Plan, view: SnapshotView, target: Path, idmap: IdMap, db: AccountDb
    ) -> None:
        from shadowvault.components.base import entry_of
        from shadowvault.components.layout import lay_entry

        for action in plan.actions:
            if action.kind != "crontab" or action.verb not in ("create", "replace"):
                continue
            content = view.content_path(action.source or "")
            if content is None:
                plan.warn(f"{action.target}: not in the restored content, skipped")
                continue
            entry = entry_of(content, action.source or "")
            name = Path(action.target).name
            uid = db.uid_of(name)
            gid = db.gid_of("crontab")
            if uid is None:
                raise UsageError(f"account {name} is missing in the target after the account merge")
            spool = resolve_in_root(target, CRONTAB_DIR)
            created_spool = not spool.is_dir()
            lay_entry(
                target, action.target, entry, content, uid, gid if gid is not None else 0, move=view.movable
            )
            if created_spool:  # what the cron package creates: root:crontab 1730
                if os.geteuid() == 0:
                    os.chown(spool, 0, gid if gid is not None else 0)
                os.chmod(spool, 0o1730)


def _group_name(db: AccountDb, gid: int) -> str | None:
    return next((g.name for g in db.groups() if g.gid == gid), None)
