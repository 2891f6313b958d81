"""The OpenLDAP writer: slapd's mdb databases as components, plus an LDIF export kept in the manifest.

LMDB commits by switching a meta page, copy-on-write, so an atomic image of a live data.mdb is
a committed state: every operation acknowledged before the freeze is in it. The freeze itself has
nothing to block. lock.mdb is not needed and is left out of restores.

The LDIF (slapcat of each database, one read transaction, so itself consistent) is taken at
post_snapshot, out of the freeze window; it holds everything acknowledged before the freeze and
maybe a little more. It is kept, zstd-compressed, in the component's metadata, so the manifest
stored with every backup carries it: no file has to be written into the application's tree or
the shadow. Past `ldif_max_bytes` (compressed) it is left out and the manifest says so. When the
shadow is not atomic (reflink, live) the copied data.mdb cannot be trusted and the LDIF is the
restore path.

Restore: pre_restore stops slapd; files are laid down; post_restore either keeps the laid-down
data.mdb (method "files") or rebuilds the database from the LDIF with slapadd (method "ldif"),
checks it with slapcat, and starts slapd (the `start_command` option). For a syncrepl consumer this
is a non-authoritative restore: started again, it catches up from its provider; the restore says
which mode it was (restore_mode). An authoritative restore of entries, which must win over the
replicas, is shadow/writers/ldap_authoritative.py.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import time
from typing import Any

import zstandard

from shadowvault import proc
from shadowvault.directory.slapd import (
    DEFAULT_CONFIG_DIR,
    MdbDatabase,
    as_owner_of,
    config_args,
    count_entries,
    export_ldif,
    load_ldif,
    read_config,
    running_instances,
)
from shadowvault.directory.slapd_replication import DatabaseSettings, database_settings
from shadowvault.errors import CommandError, WriterError
from shadowvault.shadow.manifest import Component
from shadowvault.shadow.volumes import Volume
from shadowvault.shadow.writers import app_settings as S
from shadowvault.shadow.writers.appwriter import AppWriter, on_volumes, restored_path, set_aside
from shadowvault.shadow.writers.base import RestoreContext, SnapshotContext
from shadowvault.shadow.writers.ldap_authoritative import kept_entries, kept_ldif

log = logging.getLogger(__name__)

DEFAULT_LDIF_MAX = 8 << 20


class LdapWriter(AppWriter):
    """One slapd, named by its configuration (a slapd.conf file or a slapd.d directory).

    Options: ldif (true: keep an LDIF export, default), ldif_max_bytes.
    """

    name = "ldap"
    settings = {"ldif": S.FLAG, "ldif_max_bytes": S.INTEGER}

    def __init__(self, instance: str | None = None, **options: Any) -> None:
        super().__init__(os.path.realpath(instance) if instance else DEFAULT_CONFIG_DIR, **options)
        self._databases: list[MdbDatabase] = []

    @classmethod
    def discover(cls, volumes: list[Volume]) -> list[LdapWriter]:
        return [
            cls(config)
            for config, databases in running_instances()
            if any(db.directory and on_volumes(db.directory, volumes) for db in databases)
        ]

    @property
    def config(self) -> str:
        return str(self.instance)

    def _load(self) -> list[MdbDatabase]:
        try:
            self._databases, _ = read_config(self.config)
        except OSError as err:
            raise WriterError(f"cannot read slapd's configuration {self.config}: {err.strerror}") from err
        return self._databases

    def identify(self) -> list[Component]:
        self.components = [
            self.database_component(
                name=f"ldap {db.suffix or db.directory}",
                paths=[os.path.join(db.directory, "data.mdb")],
                reason="LMDB is copy-on-write: an atomic image is a committed state",
                metadata={
                    "config": self.config,
                    "suffix": db.suffix,
                    "directory": db.directory,
                    "database_index": db.index,
                    "nosync": db.nosync,
                },
            )
            for db in self._load()
        ]
        return self.components

    def prepare_backup(self, ctx: SnapshotContext) -> None:
        if not self._load():
            raise WriterError(f"{self.config} declares no mdb database")

    def freeze(self, ctx: SnapshotContext) -> None:
        self.mark_freeze()  # nothing to hold: LMDB's committed state is whatever the image holds

    def thaw(self, ctx: SnapshotContext) -> None:
        pass

    def post_snapshot(self, ctx: SnapshotContext) -> None:
        for component in self.components:
            meta = component.metadata
            files_ok, why = self.grade(ctx, component.paths)
            if meta.get("nosync") and files_ok:
                why += " (dbnosync is set: the image is still a committed state of the page cache)"
            meta.update(freeze_started=self.freeze_started, files_consistent=files_ok, files_reason=why)
            if self.options.get("ldif", True):
                meta.update(self._export(component))
            if not files_ok and "ldif" not in meta:
                raise WriterError(f"{component.paths[0]}: {why}, and no LDIF export could be kept")

    def _export(self, component: Component) -> dict[str, Any]:
        meta = component.metadata
        ldif = export_ldif(self.config, meta["suffix"], meta["database_index"], meta["directory"])
        packed = zstandard.ZstdCompressor(level=6).compress(ldif)
        limit = int(self.options.get("ldif_max_bytes", DEFAULT_LDIF_MAX))
        if len(packed) > limit:
            return {
                "ldif": None,
                "ldif_note": f"LDIF export left out: {len(packed)} bytes compressed > {limit}",
            }
        return {
            "ldif": base64.b64encode(packed).decode(),
            "ldif_entries": count_entries(ldif),
            "ldif_bytes": len(ldif),
        }

    def metadata(self) -> dict[str, Any]:
        return {"config": self.config, "databases": [c.metadata.get("suffix") for c in self.components]}

    # ------------------------------------------------------------ restore

    def check_restore(self, ctx: RestoreContext) -> None:
        """A restore that rebuilds from the kept LDIF needs one that reads: checked before slapd is
        stopped, so a missing or damaged export leaves the live directory as it is."""
        for component in ctx.components:
            meta = component.metadata
            if component.writer == self.name and _method(ctx, meta) == "ldif" and kept_entries(meta) is None:
                raise WriterError(_no_ldif(meta))

    def pre_restore(self, ctx: RestoreContext) -> None:
        # Stop the slapd that serves the target: the original one only for an in-place restore.
        in_place = ctx.target_root in ("", "/")
        config = ctx.options.get("slapd_config") or (self.config if in_place else None)
        if config:
            self._stop_slapd(config)
        for component in ctx.components:
            if component.writer == self.name:
                set_aside(restored_path(ctx, os.path.join(component.metadata["directory"], "data.mdb")), ctx)

    def _stop_slapd(self, config: str) -> None:
        try:
            _, pidfile = read_config(config)
        except OSError:
            return
        if not pidfile:
            return
        try:
            with open(pidfile) as f:
                pid = int(f.read().split()[0])
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "slapd":
                    return
        except (OSError, ValueError, IndexError):
            return
        log.info("stopping slapd (pid %d) before restoring its databases", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while os.path.exists(f"/proc/{pid}"):
            if time.monotonic() > deadline:
                raise WriterError(f"slapd (pid {pid}) did not stop")
            time.sleep(0.05)

    def post_restore(self, ctx: RestoreContext) -> None:
        config = ctx.options.get("slapd_config") or self.config
        for component in ctx.components:
            if component.writer != self.name:
                continue
            meta = component.metadata
            directory = restored_path(ctx, meta["directory"])
            method = _method(ctx, meta)
            for stale in ("lock.mdb",):
                path = os.path.join(directory, stale)
                if os.path.exists(path):
                    os.unlink(path)
            if method == "ldif":
                self._slapadd(config, directory, meta)
            self._check(config, directory, meta)
            ctx.notes.append(restore_mode(database_settings(config, meta.get("suffix", ""))))
        start = ctx.options.get("start_command")
        if start:
            try:
                proc.run(list(start), timeout=float(ctx.options.get("start_timeout", 300)))
            except CommandError as err:
                raise WriterError(f"the restored slapd did not start: {err}") from err

    def _slapadd(self, config: str, directory: str, meta: dict[str, Any]) -> None:
        ldif = kept_ldif(meta)
        if ldif is None:
            raise WriterError(_no_ldif(meta))
        load_ldif(config, directory, ldif, meta.get("suffix", ""), int(meta.get("database_index", 1)))

    def _check(self, config: str, directory: str, meta: dict[str, Any]) -> None:
        argv = ["slapcat", *config_args(config)]
        argv += ["-b", meta["suffix"]] if meta.get("suffix") else ["-n", str(meta.get("database_index", 1))]
        try:
            proc.run(as_owner_of(directory, argv), timeout=3600)
        except CommandError as err:
            raise WriterError(
                f"slapcat cannot read the restored database {meta.get('suffix')}: {err}"
            ) from err


def _method(ctx: RestoreContext, meta: dict[str, Any]) -> str:
    """files (lay data.mdb down) or ldif (slapadd the kept export): the option, else what the backup says."""
    return str(ctx.options.get("ldap_method") or ("files" if meta.get("files_consistent", True) else "ldif"))


def _no_ldif(meta: dict[str, Any]) -> str:
    note = meta.get("ldif_note", "restore by files")
    return f"no LDIF export in the manifest for {meta.get('suffix')}: {note}"


def restore_mode(settings: DatabaseSettings) -> str:
    """What a restore of the files means for this database's replication, in the administrator's words."""
    where = f"{settings.suffix}: " if settings.suffix else ""
    partners = ", ".join(settings.providers)
    if settings.role in ("consumer", "multi-provider"):
        return (
            f"{where}non-authoritative restore: a syncrepl {settings.role} of {partners}; once started it "
            "catches up from there (changes and deletions made since the backup come back to it)"
        )
    if settings.role == "provider":
        return (
            f"{where}full restore of a syncrepl provider: nothing to catch up from, the backup is the "
            "directory's state; consumers may keep changes made since (re-initialize them), or bring "
            "back single entries with --authoritative DN on the running provider instead"
        )
    return f"{where}full restore: no syncrepl replication in its configuration"
