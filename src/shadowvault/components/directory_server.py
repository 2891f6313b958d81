"""The directory server's data in system-state: an LDIF export of each slapd database under the source root.

The root filesystem is never shadowed, so slapd's mdb files are not backed up as files. Instead
slapcat (shadowvault/directory/slapd.py, shared with the ldap writer) reads each database of every running
slapd whose configuration and database directory lie under the source root (one read transaction:
consistent while slapd runs on mdb), and the LDIF is kept as a component document
(`ldap/<name>.ldif`, described by `ldap.json`).

Restore rebuilds each database with slapadd, pointed at the TARGET's configuration (restored with
/etc) through a private copy whose database directory is rewritten to lie inside the target root:
the configuration names the machine's own paths (/var/lib/ldap), which on the restoring host would
be the host's database. A target that already holds a database is left alone unless --overwrite.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import msgspec

from shadowvault.components.base import RestoreOptions, SnapshotView, documents_path
from shadowvault.components.layout import resolve_in_root
from shadowvault.components.plan import Plan
from shadowvault.directory.ldif import LdifError, parse_entries
from shadowvault.directory.slapd import count_entries, export_ldif, load_ldif, running_instances
from shadowvault.errors import NotFoundError, ShadowvaultError
from shadowvault.paths_within import inside_root
from shadowvault.typed_decoding import decode_json

log = logging.getLogger(__name__)

COMPONENT = "system-state"
LDAP_DOCUMENT = "ldap.json"


class LdapDatabaseRecord(msgspec.Struct, kw_only=True):
    suffix: str
    database_index: int  # slapcat/slapadd -n
    config: str  # slapd.conf or slapd.d, absolute inside the source root
    directory: str  # the database directory, absolute inside the source root
    ldif: str  # the document holding the export ("ldap/<name>.ldif")
    entries: int = 0


class LdapDocument(msgspec.Struct, kw_only=True):
    databases: list[LdapDatabaseRecord] = []


def collect_ldap(source_root: Path) -> dict[str, bytes]:
    """LDIF documents of every running slapd database under `source_root`, plus ldap.json describing them."""
    records: list[LdapDatabaseRecord] = []
    documents: dict[str, bytes] = {}
    for config, databases in running_instances():
        config_in = inside_root(source_root, config)
        if config_in is None:
            continue
        for db in databases:
            directory_in = inside_root(source_root, db.directory) if db.directory else None
            if directory_in is None:
                log.info("slapd database %s of %s lies outside the source root", db.directory, config)
                continue
            ldif = export_ldif(config, db.suffix, db.index, db.directory)
            stem = re.sub(r"[^A-Za-z0-9=,._-]", "_", db.suffix or f"database-{db.index}")
            name = f"ldap/{stem}.ldif"
            if name in documents:
                name = f"ldap/{stem}-{len(documents)}.ldif"
            documents[name] = ldif
            records.append(
                LdapDatabaseRecord(
                    suffix=db.suffix,
                    database_index=db.index,
                    config=config_in,
                    directory=directory_in,
                    ldif=name,
                    entries=count_entries(ldif),
                )
            )
    if records:
        documents[LDAP_DOCUMENT] = msgspec.json.encode(LdapDocument(databases=records))
    return documents


def _records(view: SnapshotView) -> list[LdapDatabaseRecord]:
    raw = view.document(COMPONENT, LDAP_DOCUMENT)
    return decode_json(raw, LdapDocument).databases if raw else []


def plan_ldap(plan: Plan, view: SnapshotView, options: RestoreOptions) -> None:
    """One `load directory` action per database (or `leave` when the target already has one)."""
    target = options.target_root
    for record in _records(view):
        label = record.suffix or record.directory
        dest = resolve_in_root(target, record.directory)
        if (dest / "data.mdb").exists() and not options.overwrite:
            plan.add(
                "leave", "directory", label, f"{dest} already holds a database (--overwrite replaces it)"
            )
            continue
        _check_ldif(view, record, label)
        config = resolve_in_root(target, record.config)
        plan.add(
            "load",
            "directory",
            label,
            f"{record.entries} entries into {dest} by slapadd with {config}",
            source=f"{documents_path(COMPONENT)}/{record.ldif}".lstrip("/"),
        )
    plan.data["ldap"] = {r.suffix or r.directory: r for r in _records(view)}


def _check_ldif(view: SnapshotView, record: LdapDatabaseRecord, label: str) -> None:
    """Refuse a damaged LDIF export before anything is written: it is the snapshot's (hostile input),
    and slapadd would find the damage only half-way through the restore, as the ldap writer's
    restores check theirs."""
    ldif = view.document(COMPONENT, record.ldif)
    if ldif is None:
        return  # the load reports the missing document
    try:
        parse_entries(ldif)
    except LdifError as err:
        raise LdifError(f"the backup's LDIF export of {label} ({record.ldif}) is damaged: {err}") from None


def apply_ldap(plan: Plan, view: SnapshotView, target: Path) -> None:
    """Carry out the plan's `load directory` actions; a failure is recorded and the rest goes on."""
    records: dict[str, LdapDatabaseRecord] = plan.data.get("ldap", {})
    for action in plan.of("load", "directory"):
        record = records[action.target]
        try:
            _load(record, view, target)
        except (ShadowvaultError, OSError) as err:
            plan.errors.append((f"directory {action.target}", str(err)))


def _load(record: LdapDatabaseRecord, view: SnapshotView, target: Path) -> None:
    ldif = view.document(COMPONENT, record.ldif)
    if ldif is None:
        raise NotFoundError(f"the snapshot's system-state lacks {record.ldif}")
    config = resolve_in_root(target, record.config)
    if not config.exists():
        raise NotFoundError(f"the target has no slapd configuration {config}: nothing to load with")
    dest = resolve_in_root(target, record.directory)
    if not dest.exists():
        dest.mkdir(parents=True, mode=0o700)
        st = config.stat()  # the target's slapd user owns its configuration
        os.chown(dest, st.st_uid, st.st_gid)
    owner = dest.stat()
    with tempfile.TemporaryDirectory(prefix="sv-slapd-") as tmp:
        private = target_config(config, target, record.database_index, dest, Path(tmp))
        for path in [Path(tmp), *Path(tmp).rglob("*")]:
            os.chown(path, owner.st_uid, owner.st_gid)  # slapadd runs as the database's owner
        load_ldif(str(private), str(dest), ldif, record.suffix, record.database_index)
    for path in dest.iterdir():
        os.chown(path, owner.st_uid, owner.st_gid)


def target_config(config: Path, target: Path, index: int, dest: Path, tmp: Path) -> Path:
    """A private copy of the target's slapd configuration whose database `index` lives at `dest`.

    slapd.conf: the database's `directory` is rewritten, and `include` files the target has are taken
    from the target (the host's otherwise). slapd.d: the database's olcDbDirectory is rewritten (and the
    file's CRC line dropped, which slapd accepts).
    """
    if config.is_dir():
        copy = tmp / "slapd.d"
        shutil.copytree(config, copy, symlinks=True)
        for path in (copy / "cn=config").glob("olcDatabase={*}*.ldif"):
            found = re.search(r"\{(-?\d+)\}", path.name)
            if found and int(found.group(1)) == index:
                text = re.sub(r"\n ", "", path.read_text())
                lines = [line for line in text.splitlines() if not line.startswith("# CRC32")]
                lines = [
                    f"olcDbDirectory: {dest}" if line.startswith("olcDbDirectory:") else line
                    for line in lines
                ]
                path.write_text("\n".join(lines) + "\n")
        return copy
    out, current = [], 0
    for raw in config.read_text().splitlines():
        key, _, value = raw.strip().partition(" ")
        key = key.lower()
        if key == "database":
            current += 1
        elif key == "directory" and current == index:
            raw = f"directory {dest}"
        elif key == "include" and resolve_in_root(target, value.strip()).exists():
            raw = f"include {resolve_in_root(target, value.strip())}"
        out.append(raw)
    copy = tmp / "slapd.conf"
    copy.write_text("\n".join(out) + "\n")
    return copy
