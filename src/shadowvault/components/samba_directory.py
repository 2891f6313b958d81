"""The Samba AD DC in system-state: a `samba-tool domain backup` archive per DC, recovered on request.

Every running samba DC whose smb.conf and private dir lie under the source root is backed up with
samba-tool (shadowvault/directory/samba_dc.py, shared with the samba writer): the archive is kept as a
component document (`samba/<REALM>.tar.bz2`, described by `samba.json`), and its sysvol is backed up
as files too (for restoring one GPO file by hand). The archive is the directory's consistent state;
the live files of private/ are not.

A DC is recovered only when asked: `--directory-restore new-dc` (the domain on a new DC, named with
`--writer-option samba.newservername=NAME`) or `same-dc` (the DC under its own name). It is laid out
in an empty directory as a provision --targetdir makes it: `samba.targetdir=DIR`, or by default the
DC's own directory inside the target root. Without the option the plan says how.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from shadowvault.components.base import RestoreOptions, SnapshotView, check_document_name
from shadowvault.components.layout import resolve_in_root
from shadowvault.components.plan import Plan
from shadowvault.directory.samba_archive import check_archive
from shadowvault.directory.samba_dc import MODES, back_up, check_record, recover_bytes, running_dcs
from shadowvault.errors import NotFoundError, ShadowvaultError, UsageError
from shadowvault.paths_within import inside_root
from shadowvault.typed_decoding import decode_json

log = logging.getLogger(__name__)

COMPONENT = "system-state"
SAMBA_DOCUMENT = "samba.json"


class SambaDcRecord(msgspec.Struct, kw_only=True):
    realm: str
    netbios_name: str
    method: str  # offline | online: how samba-tool made the archive
    archive: str  # the document holding it ("samba/<REALM>.tar.bz2")
    archive_bytes: int
    config: str  # smb.conf, absolute inside the source root
    home: str  # the DC's directory (provision --targetdir, or the private dir's parent), inside the root
    sysvol: str  # inside the source root
    was_running: bool = True


class SambaDocument(msgspec.Struct, kw_only=True):
    dcs: list[SambaDcRecord] = []


def collect_samba(source_root: Path) -> tuple[dict[str, bytes], list[str]]:
    """The archive of every running DC under `source_root` plus samba.json; and their sysvols (paths)."""
    records: list[SambaDcRecord] = []
    documents: dict[str, bytes] = {}
    sysvols: list[str] = []
    for dc, _pid in running_dcs():
        config, home, sysvol = (inside_root(source_root, p) for p in (dc.config, dc.home, dc.sysvol))
        if config is None or home is None or inside_root(source_root, dc.private_dir) is None:
            log.info("samba DC %s (%s) lies outside the source root", dc.realm, dc.config)
            continue
        with tempfile.TemporaryDirectory(prefix="sv-samba-backup-") as work:
            archive = back_up(dc, work, "offline")
            data = archive.path.read_bytes()
        name = f"samba/{re.sub(r'[^A-Za-z0-9._-]', '_', dc.realm or dc.netbios_name)}.tar.bz2"
        if name in documents:
            name = name.replace(".tar.bz2", f"-{len(records)}.tar.bz2")
        documents[name] = data
        records.append(
            SambaDcRecord(
                realm=dc.realm,
                netbios_name=dc.netbios_name,
                method=archive.method,
                archive=name,
                archive_bytes=len(data),
                config=config,
                home=home,
                sysvol=sysvol or "",
            )
        )
        if sysvol and os.path.isdir(dc.sysvol):
            sysvols.append(sysvol)
    if records:
        documents[SAMBA_DOCUMENT] = msgspec.json.encode(SambaDocument(dcs=records))
    return documents, sysvols


def _records(view: SnapshotView) -> list[SambaDcRecord]:
    raw = view.document(COMPONENT, SAMBA_DOCUMENT)
    return decode_json(raw, SambaDocument).dcs if raw else []


def _targetdir(record: SambaDcRecord, options: RestoreOptions) -> Path:
    chosen = options.directory_options.get("targetdir")
    if chosen:
        return Path(os.path.abspath(str(chosen)))
    return resolve_in_root(options.target_root, record.home)


def _label(record: SambaDcRecord) -> str:
    return f"{record.realm} ({record.netbios_name})"


def plan_samba(plan: Plan, view: SnapshotView, options: RestoreOptions) -> None:
    """One `load samba-dc` action per DC to recover (or `leave` saying how to ask for it)."""
    mode = options.directory_restore
    records = _records(view)
    if mode and not records:
        raise UsageError("--directory-restore: this snapshot's system-state holds no Samba DC")
    if mode and mode not in MODES:
        raise UsageError(f"unknown --directory-restore {mode!r} (valid: {', '.join(MODES)})")
    name = str(options.directory_options.get("newservername") or "")
    for record in records:
        check_record(record.realm, record.netbios_name, record.home, f"the snapshot's {SAMBA_DOCUMENT}")
        label = _label(record)
        check_document_name(COMPONENT, record.archive)  # before anything is written
        if not mode:
            plan.add("leave", "samba-dc", label, "give --directory-restore new-dc|same-dc to recover it")
            continue
        dest = _targetdir(record, options)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise UsageError(
                f"{dest} is not empty: a DC is recovered into an empty directory "
                "(move it aside or give --writer-option samba.targetdir=DIR)"
            )
        if mode == "same-dc" and record.method != "offline":
            raise UsageError(
                f"{label} was backed up online: a replica without the DC's own identity, which can only "
                "become a new DC (--directory-restore new-dc)"
            )
        if mode == "new-dc":
            if not name:
                raise UsageError(
                    "--directory-restore new-dc needs the new DC's name: "
                    "--writer-option samba.newservername=NAME"
                )
            if name.upper() == record.netbios_name.upper():
                raise UsageError(
                    f"{name} is the backed-up DC's own name: recover it with --directory-restore same-dc, "
                    "or give the new DC another name"
                )
            how = f"new-dc {name.upper()}: the domain from the {record.method} backup, every role seized"
        else:
            how = f"same-dc {record.netbios_name}: its own files from the {record.method} backup"
        archive = view.document(COMPONENT, record.archive)
        if archive is not None:  # hostile until checked: refused before anything is written
            check_archive(archive, f"the snapshot's Samba archive {record.archive}")
        plan.add(
            "load",
            "samba-dc",
            label,
            f"{how}, into {dest} (then start it: samba -s {dest}/etc/smb.conf)",
            source=record.archive,
        )
    plan.data["samba"] = {_label(r): r for r in records}


def apply_samba(plan: Plan, view: SnapshotView, options: RestoreOptions) -> None:
    """Carry out the plan's DC recoveries; a failure is recorded and the rest goes on."""
    records: dict[str, SambaDcRecord] = plan.data.get("samba", {})
    for action in plan.of("load", "samba-dc"):
        record = records[action.target]
        try:
            _recover(record, view, options)
        except (ShadowvaultError, OSError) as err:
            plan.errors.append((action.target, str(err)))


def _recover(record: SambaDcRecord, view: SnapshotView, options: RestoreOptions) -> None:
    archive = view.document(COMPONENT, record.archive)
    if archive is None:
        raise NotFoundError(f"the snapshot's system-state lacks {record.archive}")
    opts: dict[str, Any] = options.directory_options
    recover_bytes(
        str(options.directory_restore),
        archive,
        str(_targetdir(record, options)),
        realm=record.realm,
        backed_up=record.netbios_name,
        newservername=str(opts.get("newservername") or ""),
    )
