"""The Samba AD DC writer: a domain controller, backed up by samba-tool, its archive kept in the manifest.

A DC's databases (sam.ldb and its partitions, secrets, idmap) are many ldb/tdb files that samba
writes together; a copy of them is consistent only when taken under samba's database locks, which
is what `samba-tool domain backup offline` does (safe while samba runs). `online` (option
`method = "online"`) replicates the directory over DRS with the DC's machine account instead: a
clone that can only seed a new DC. The archive is made at post_snapshot, out of the freeze window,
and kept in the component's metadata (base64), so the manifest stored with every backup carries
it; sysvol (GPOs, logon scripts) is inside it. The system-state component keeps the same archive as
a document (components/samba_directory.py); both go through shadowvault/directory/samba_dc.py.

Restore (`restore SNAP --writer samba --directory-restore new-dc|same-dc`): post_restore recovers the
DC into an empty directory (option `targetdir`, by default the DC's own directory below the target
root): as a new DC named by `newservername`, or as itself. Starting it is the administrator's step
(`samba -s DIR/etc/smb.conf`), unless `start_command` is given.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
from typing import Any

from shadowvault import proc
from shadowvault.directory.samba_dc import (
    DEFAULT_CONFIG,
    MODES,
    back_up,
    check_record,
    read_dc,
    recover_bytes,
    running_dcs,
    running_pid,
)
from shadowvault.errors import CommandError, UsageError, WriterError
from shadowvault.shadow.manifest import Component, Consistency, RestoreMethod
from shadowvault.shadow.volumes import Volume
from shadowvault.shadow.writers import app_settings as S
from shadowvault.shadow.writers.appwriter import AppWriter, on_volumes, restored_path
from shadowvault.shadow.writers.base import RestoreContext, SnapshotContext

log = logging.getLogger(__name__)

DEFAULT_ARCHIVE_MAX = 256 << 20


class SambaWriter(AppWriter):
    """One Samba AD DC, named by its smb.conf (samba-tool domain backup; recovery as new-dc or same-dc).

    Options: method ("offline", default, or "online"), server (online: the DC to replicate from),
    archive_max_bytes.
    """

    name = "samba"
    settings = {"method": S.STRING, "server": S.STRING, "archive_max_bytes": S.INTEGER}

    def __init__(self, instance: str | None = None, **options: Any) -> None:
        super().__init__(os.path.realpath(instance) if instance else DEFAULT_CONFIG, **options)

    @classmethod
    def discover(cls, volumes: list[Volume]) -> list[SambaWriter]:
        return [cls(dc.config) for dc, _pid in running_dcs() if on_volumes(dc.private_dir, volumes)]

    @property
    def config(self) -> str:
        return str(self.instance)

    def identify(self) -> list[Component]:
        dc = read_dc(self.config)
        self.components = [
            Component(
                name=f"samba DC {dc.realm} ({dc.netbios_name})",
                writer=self.name,
                instance=self.instance,
                kind="directory",
                paths=[],  # nothing is laid down as files: the archive in the metadata is the restore
                restore_method=RestoreMethod.CUSTOM,
                consistency=Consistency.APPLICATION,
                reason="samba-tool domain backup copies the directory under samba's database locks",
                metadata=dc.to_dict(),
            )
        ]
        return self.components

    def prepare_backup(self, ctx: SnapshotContext) -> None:
        read_dc(self.config)  # an unreadable or non-DC configuration fails here, before any freeze

    def freeze(self, ctx: SnapshotContext) -> None:
        self.mark_freeze()  # nothing to hold: samba-tool takes its own locks for the archive

    def thaw(self, ctx: SnapshotContext) -> None:
        pass

    def post_snapshot(self, ctx: SnapshotContext) -> None:
        dc = read_dc(self.config)
        method = str(self.options.get("method", "offline"))
        if method == "online" and running_pid(dc) is None:
            method = "offline"  # a stopped DC has nothing to replicate from; its files are at rest
        limit = int(self.options.get("archive_max_bytes", DEFAULT_ARCHIVE_MAX))
        with tempfile.TemporaryDirectory(prefix="sv-samba-backup-") as work:
            archive = back_up(dc, work, method, str(self.options.get("server", "127.0.0.1")))
            data = archive.path.read_bytes()
        if len(data) > limit:
            raise WriterError(f"the samba-tool archive of {dc.realm} is {len(data)} bytes > {limit}")
        for component in self.components:
            component.metadata.update(
                freeze_started=self.freeze_started,
                method=archive.method,
                archive=base64.b64encode(data).decode(),
                archive_bytes=len(data),
            )

    def metadata(self) -> dict[str, Any]:
        return {"config": self.config}

    # ------------------------------------------------------------ restore

    def check_restore(self, ctx: RestoreContext) -> None:
        mode = ctx.options.get("directory_restore")
        if mode not in MODES:
            raise UsageError(f"restoring a Samba DC needs --directory-restore {'|'.join(MODES)}")
        if mode == "new-dc" and not ctx.options.get("newservername"):
            raise UsageError("--directory-restore new-dc needs --writer-option samba.newservername=NAME")
        for component in ctx.components:
            if component.writer == self.name:  # the manifest is the backup's: hostile until checked
                meta = component.metadata
                check_record(
                    str(meta.get("realm", "")),
                    str(meta.get("netbios_name", "")),
                    str(meta.get("home", "")),
                    f"the backup manifest's {component.name}",
                )
            if (
                component.writer == self.name
                and mode == "same-dc"
                and component.metadata.get("method") != "offline"
            ):
                raise UsageError(
                    f"{component.name} was backed up online: a replica without the DC's own identity, "
                    "which can only become a new DC (--directory-restore new-dc)"
                )

    def post_restore(self, ctx: RestoreContext) -> None:
        mode = str(ctx.options.get("directory_restore"))
        for component in ctx.components:
            if component.writer != self.name:
                continue
            meta = component.metadata
            if not meta.get("archive"):
                raise WriterError(f"no samba-tool archive in the manifest for {component.name}")
            targetdir = str(ctx.options.get("targetdir") or restored_path(ctx, meta["home"]))
            recover_bytes(
                mode,
                base64.b64decode(meta["archive"]),
                targetdir,
                realm=meta["realm"],
                backed_up=meta["netbios_name"],
                newservername=str(ctx.options.get("newservername") or ""),
            )
            log.info("%s recovered as %s in %s", component.name, mode, targetdir)
        start = ctx.options.get("start_command")
        if start:
            try:
                proc.run(list(start), timeout=float(ctx.options.get("start_timeout", 300)))
            except CommandError as err:
                raise WriterError(f"the recovered samba did not start: {err}") from err
