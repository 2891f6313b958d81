"""The system-state component: what a Linux machine needs to come back as itself.

Backed up: /etc (with hostname, network config, apt sources and keys, crontab and timer units, boot
configuration such as /etc/default/grub and /etc/kernel/cmdline), user crontabs, third-party
keyrings in /usr/share/keyrings, local CA certificates in /usr/local/share/ca-certificates (PKI
stores: /etc/ssl and /etc/pki come with /etc), the directory server's databases (an LDIF export of
every running slapd database under the source root, directory_server.py; a samba-tool backup of
every running Samba AD DC under it, with its sysvol, samba_directory.py), the bootloader's
generated config (for reference), and generated documents: every account and group with shadow
entries (accounts.json), the package selection with versions and the state of every conffile
(packages.json), unit states (units.json), and the boot
facts (boot.json: fstab, the running kernel's command line when the source is the live system).

Restore into a target root, in this order:
1. accounts and groups the target lacks are created by name (the old id when it is free);
2. /etc is laid down with merge rules: the account files go through step 1, a conffile that the
   source had left at its package default keeps the target's copy, changed files are taken from
   the source, files only the target has are left alone, fstab is left alone unless --fix-fstab;
3. user crontabs, keyrings and local CA certificates (owners by name);
4. the manual packages the target lacks are installed with apt inside the target;
5. each slapd database is rebuilt from its LDIF with slapadd and the target's configuration
   (directory_server.py); a target that already has the database keeps it unless --overwrite;
   a Samba DC is recovered from its samba-tool archive with --directory-restore new-dc|same-dc
   (samba_directory.py);
6. unit links are recreated (enabled, masked) and links of units the source had disabled removed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

from shadowvault.components import chroot, fstab
from shadowvault.components.accounts import (
    AccountDb,
    AccountsDocument,
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
from shadowvault.components.directory_server import apply_ldap, collect_ldap, plan_ldap
from shadowvault.components.dpkg import PackagesDocument, installed_names, read_packages
from shadowvault.components.entries import apply_subtree_actions, plan_subtree, selected
from shadowvault.components.layout import ensure_parent, resolve_in_root
from shadowvault.components.plan import Plan
from shadowvault.components.samba_directory import apply_samba, collect_samba, plan_samba
from shadowvault.components.units import UnitsDocument, links_to, read_units
from shadowvault.components.user_profiles import account_changes_into
from shadowvault.disk.layout import layout_documents
from shadowvault.errors import CommandError, NotFoundError, UnsupportedError
from shadowvault.fsutil import atomic_write
from shadowvault.typed_decoding import decode_json

log = logging.getLogger(__name__)

ACCOUNT_FILES = {
    "etc/passwd",
    "etc/group",
    "etc/shadow",
    "etc/gshadow",
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/.pwd.lock",
    "etc/subuid-",
    "etc/subgid-",
}
# generated on the machine itself; the target's own copy is right
MACHINE_LOCAL = {"etc/ld.so.cache", "etc/mtab", "etc/adjtime"}
CRONTABS = "/var/spool/cron/crontabs"
KEYRINGS = "/usr/share/keyrings"
# locally added CA certificates (update-ca-certificates); /etc/ssl and /etc/pki come with /etc
LOCAL_CAS = "/usr/local/share/ca-certificates"
GENERATED_BOOT = ("/boot/grub/grub.cfg",)


class BootDocument(msgspec.Struct, kw_only=True, omit_defaults=True):
    fstab: str = ""
    cmdline: str | None = None  # /proc/cmdline, only when the source root is the running system
    hostname: str = ""


class SystemState(Component):
    name = "system-state"
    description = "/etc, accounts, package selection, unit states, crontabs, boot and network config"

    # ------------------------------------------------------------------ backup

    def collect(self, source_root: Path, options: CollectOptions) -> Collection:
        if not (source_root / "etc").is_dir():
            raise NotFoundError(f"{source_root} has no /etc: not a machine root")
        paths = ["/etc"]
        for extra in (CRONTABS, KEYRINGS, LOCAL_CAS, *GENERATED_BOOT):
            if resolve_in_root(source_root, extra).exists():
                paths.append(extra)
        samba_documents, sysvols = collect_samba(source_root)  # each DC's samba-tool archive
        paths += [p for p in sysvols if p not in paths]
        boot = BootDocument(
            fstab=_read_text(source_root / "etc/fstab"),
            hostname=_read_text(source_root / "etc/hostname").strip(),
        )
        if source_root.resolve() == Path("/"):
            boot.cmdline = _read_text(Path("/proc/cmdline")).strip()
        documents = {
            "accounts.json": encode_document(AccountDb(source_root).document()),
            "packages.json": encode_document(read_packages(source_root)),
            "units.json": encode_document(read_units(source_root)),
            "boot.json": encode_document(boot),
            **collect_ldap(source_root),  # the directory server's databases as LDIF
            **samba_documents,
            **layout_documents(source_root),  # the disk layout, for a bare-metal recover
        }
        return Collection(self.name, source_root, paths, documents, list(options.excludes))

    # ------------------------------------------------------------------ restore

    def _documents(
        self, view: SnapshotView
    ) -> tuple[AccountsDocument, PackagesDocument, UnitsDocument, BootDocument]:
        names = ("accounts.json", "packages.json", "units.json", "boot.json")
        raw = {name: view.document(self.name, name) for name in names}
        missing = [name for name, data in raw.items() if data is None]
        if missing:
            raise NotFoundError(f"the snapshot's system-state lacks {', '.join(missing)}")
        return (
            decode_accounts(raw["accounts.json"] or b""),
            decode_json(raw["packages.json"] or b"", PackagesDocument),
            decode_json(raw["units.json"] or b"", UnitsDocument),
            decode_json(raw["boot.json"] or b"", BootDocument),
        )

    def restore_prefixes(self, view: SnapshotView, options: RestoreOptions) -> list[str]:
        return list(options.includes) if options.includes else ["/etc", CRONTABS, KEYRINGS, LOCAL_CAS]

    def plan(self, view: SnapshotView, options: RestoreOptions) -> Plan:
        accounts, packages, units, boot = self._documents(view)
        target = options.target_root
        plan = Plan(self.name, str(target))
        if options.includes:
            return self._plan_items(plan, view, options, packages, boot)
        # 1. accounts
        db = AccountDb(target)
        users = [u.name for u in accounts.users]
        changes, _ = plan_accounts(accounts, db, users, create=True)
        account_changes_into(plan, [c for c in changes if c.action != "leave"])
        left = sum(1 for c in changes if c.action == "leave")
        if left:
            plan.add("leave", "accounts", f"{left} accounts and groups", "exist in the target")
        for group in accounts.groups:
            if db.gid_of(group.name) is None and not any(c.name == group.name for c in changes):
                plan.add("create", "group", group.name, f"gid {group.gid} if free")
        # 2. /etc with merge rules
        conffiles = packages.conffile_states()
        plan_subtree(
            plan,
            view,
            target,
            "etc",
            "etc",
            existing="replace",
            skip=_etc_skip,
            decide=lambda e, dest: _etc_decision(e, conffiles),
            excludes=options.excludes,
        )
        self._plan_fstab(plan, boot, target, options)
        # 3. crontabs and keyrings
        plan_subtree(plan, view, target, CRONTABS, CRONTABS, existing="replace", excludes=options.excludes)
        plan_subtree(plan, view, target, KEYRINGS, KEYRINGS, existing="leave", excludes=options.excludes)
        plan_subtree(plan, view, target, LOCAL_CAS, LOCAL_CAS, existing="replace", excludes=options.excludes)
        for path in GENERATED_BOOT:
            plan.add("leave", "file", path, "generated by the bootloader: regenerate it in the target")
        # 4. packages
        have = installed_names(target)
        to_install = [p for p in packages.manual() if p.name not in have]
        if to_install and not (target / "var/lib/dpkg/status").is_file():
            plan.warn(
                f"{target} has no dpkg database: the {len(to_install)} packages of the source "
                "are not installed"
            )
            to_install = []
        for pkg in to_install:
            plan.add("install", "package", pkg.name, pkg.version)
        kept = len(packages.manual()) - len(to_install)
        if kept:
            plan.add("leave", "packages", f"{kept} manual packages", "already installed in the target")
        plan.data["packages"] = [chroot.Package(p.name, p.version, p.arch) for p in to_install]
        plan.data["apt_update"] = any(
            a.target.startswith("/etc/apt/sources.list") and a.verb != "leave" for a in plan.actions
        )
        if to_install and not options.install_packages:
            plan.warn("packages are not installed (--no-packages)")
        elif to_install or plan.data["apt_update"]:
            commands = chroot.install_commands(target, plan.data["packages"], update=plan.data["apt_update"])
            for argv in commands:
                plan.add("run", "command", " ".join(argv), "inside the target, starting no services")
        # 5. the directory server's databases (slapadd with the target's configuration)
        plan_ldap(plan, view, options)
        plan_samba(plan, view, options)  # a Samba DC only with --directory-restore new-dc|same-dc
        # 6. units
        self._plan_units(plan, units, target)
        if boot.cmdline:
            plan.warn(f"the source booted with kernel command line: {boot.cmdline}")
        return plan

    def _plan_items(
        self,
        plan: Plan,
        view: SnapshotView,
        options: RestoreOptions,
        packages: PackagesDocument,
        boot: BootDocument,
    ) -> Plan:
        """Item selection (--include): only the chosen files; accounts, packages and units untouched."""
        target = options.target_root
        conffiles = packages.conffile_states()
        plan.data["items_only"] = True
        for prefix in ("etc", CRONTABS, KEYRINGS, LOCAL_CAS):
            plan_subtree(
                plan,
                view,
                target,
                prefix,
                prefix,
                includes=options.includes,
                existing="replace" if options.overwrite else "leave",
                skip=_etc_skip,
                decide=lambda e, dest: _etc_decision(e, conffiles),
                excludes=options.excludes,
            )
        if selected("etc/fstab", options.includes) and any(
            "/" + i.strip("/") in ("/etc/fstab", "/etc", "/") for i in options.includes
        ):
            self._plan_fstab(plan, boot, target, options)
        for what in ("accounts", "packages", "units", "directory"):
            plan.add("leave", what, what, "not selected by --include")
        return plan

    @staticmethod
    def _plan_fstab(plan: Plan, boot: BootDocument, target: Path, options: RestoreOptions) -> None:
        current = _read_text(target / "etc/fstab")
        if not fstab.entries(boot.fstab):
            plan.add("leave", "fstab", "/etc/fstab", "the source fstab has no entries")
        elif options.fix_fstab:
            text, notes = fstab.fix_fstab(boot.fstab, current, target)
            plan.add("replace" if current else "create", "fstab", "/etc/fstab", "; ".join(notes))
            plan.data["fstab"] = text
        elif current.strip() != boot.fstab.strip():
            plan.add(
                "leave",
                "fstab",
                "/etc/fstab",
                "its devices are the source machine's; --fix-fstab maps them to the target's",
            )
        else:
            plan.add("leave", "fstab", "/etc/fstab", "identical")

    @staticmethod
    def _plan_units(plan: Plan, units: UnitsDocument, target: Path) -> None:
        for link in units.links:
            dest = resolve_in_root(target, link.path)
            if dest.is_symlink() and os.readlink(dest) == link.target:
                plan.add("leave", "unit", "/" + link.path, "enabled")
            else:
                plan.add("enable", "unit", "/" + link.path, link.target)
        for unit in units.masked:
            dest = resolve_in_root(target, f"etc/systemd/system/{unit}")
            if dest.is_symlink() and os.readlink(dest) == "/dev/null":
                plan.add("leave", "unit", unit, "masked")
            else:
                plan.add("mask", "unit", unit)
        for unit in units.disabled:
            for enabling in links_to(target, unit):
                plan.add(
                    "disable",
                    "unit",
                    "/" + enabling.relative_to(target).as_posix(),
                    f"{unit} was disabled on the source",
                )

    def apply(self, plan: Plan, view: SnapshotView, options: RestoreOptions) -> Plan:
        accounts, *_ = self._documents(view)
        target = options.target_root
        if not plan.data.get("items_only"):
            db = AccountDb(target)
            apply_accounts(accounts, db, [u.name for u in accounts.users], create=True)
            for group in accounts.groups:
                db.add_group(
                    group.name,
                    group.gid,
                    system=group.gid < db.limits["GID_MIN"],
                    gshadow_password=group.gshadow_password,
                )
            db.save()
        idmap = source_owner_map(accounts, AccountDb(target))
        apply_subtree_actions(plan, view, target, idmap)
        if "fstab" in plan.data:
            dest = resolve_in_root(target, "etc/fstab")
            ensure_parent(target, dest)
            atomic_write(dest, plan.data["fstab"].encode(), mode=0o644)
        packages = plan.data.get("packages", [])
        if options.install_packages and (packages or plan.data.get("apt_update")):
            update = plan.data.get("apt_update", False)
            try:
                plan.warnings += chroot.install_packages(target, packages, update=update)
            except (CommandError, UnsupportedError) as err:  # the units step still runs
                plan.errors.append(("packages", str(err)))
        apply_ldap(plan, view, target)
        apply_samba(plan, view, options)
        self._apply_units(plan, target)
        return plan

    @staticmethod
    def _apply_units(plan: Plan, target: Path) -> None:
        for action in plan.actions:
            if action.kind != "unit":
                continue
            if action.verb == "enable":
                dest = resolve_in_root(target, action.target)
                ensure_parent(target, dest)
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                os.symlink(action.reason, dest)
            elif action.verb == "mask":
                dest = resolve_in_root(target, f"etc/systemd/system/{action.target}")
                ensure_parent(target, dest)
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                os.symlink("/dev/null", dest)
            elif action.verb == "disable":
                resolve_in_root(target, action.target).unlink(missing_ok=True)


def _etc_skip(entry: Entry) -> bool:
    if entry.path in ACCOUNT_FILES or entry.path in MACHINE_LOCAL or entry.path == "etc/fstab":
        return True
    # unit links, masks and aliases are restored by the units step (after packages are installed)
    return entry.type == "symlink" and entry.path.startswith("etc/systemd/system/")


def _etc_decision(entry: Entry, conffiles: dict) -> tuple[str, str] | None:
    conffile = conffiles.get("/" + entry.path)
    if conffile is not None and conffile.state == "default" and entry.type == "file":
        return "leave", (
            f"unchanged from {conffile.package}'s default on the source: the target's copy is kept"
        )
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return ""
