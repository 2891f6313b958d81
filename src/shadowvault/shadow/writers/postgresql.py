"""The PostgreSQL writer: a non-exclusive base backup held open across the snapshot.

One session per cluster runs `pg_backup_start(fast => true)` at prepare_snapshot (its checkpoint
is the slow part, so it stays out of the freeze window), stays open through freeze, commit and
thaw, and runs `pg_backup_stop()` at post_snapshot (its WAL switch stays out of the window too).
The returned backup_label (and tablespace_map) go into the component's metadata, together with
the WAL from the backup's start to its end, read from the live pg_wal after the stop: the
snapshot holds the WAL only up to its own instant, and a cluster restored with a backup_label
refuses to open until it has replayed the end-of-backup record that pg_backup_stop writes later.
Carrying those bytes in the manifest (as Oracle's VSS writer carries redo in its backup document)
makes the copy restorable without a WAL archive.

When the data directory, pg_wal and every tablespace lie on one volume whose shadow is atomic, the
copy is also crash-consistent by itself (restorable by crash recovery alone); that is recorded too.

Restore (postgresql_restore.py): pre_restore stops a cluster running on the target, the files are
laid down, post_restore writes backup_label, tablespace_map and the kept WAL into the copy, starts
it and waits until recovery has finished (`pg_is_in_recovery()` false).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import struct
from typing import Any

import zstandard

from shadowvault import cancellation
from shadowvault.errors import WriterError
from shadowvault.paths_within import is_within
from shadowvault.shadow.manifest import Component, Consistency
from shadowvault.shadow.volumes import Volume
from shadowvault.shadow.writers import app_settings as S
from shadowvault.shadow.writers.appwriter import AppWriter, on_volumes, processes, restored_path, set_aside
from shadowvault.shadow.writers.base import RestoreContext, SnapshotContext
from shadowvault.shadow.writers.postgresql_restore import (
    RUNTIME_FILES,
    prepare_restored_cluster,
    read_postmaster_pid,
    start_cluster,
    stop_cluster,
)

log = logging.getLogger(__name__)

DEFAULT_WAL_MAX = 64 << 20  # compressed WAL kept in a manifest, at most
CANCEL_TIMEOUT = 10.0  # seconds a cancel request may take to reach the server
XLOG_PAGE_MAGIC_OFFSET = 8  # XLogPageHeaderData: magic u16, info u16, tli u32, pageaddr u64


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def wal_file_name(timeline: int, segno: int, seg_size: int) -> str:
    per_id = 0x100000000 // seg_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


class PostgresqlWriter(AppWriter):
    """One PostgreSQL cluster, named by its data directory.

    Options: host (socket directory or address), port, user (default postgres), password, dbname,
    wal_max_bytes (compressed WAL kept in the manifest, default 64 MiB). Without host/port the writer
    reads them from the cluster's postmaster.pid.
    """

    name = "postgresql"
    settings = {
        "host": S.STRING,
        "port": S.INTEGER,
        "user": S.STRING,
        "dbname": S.STRING,
        "wal_max_bytes": S.INTEGER,
    }

    def __init__(self, instance: str | None = None, **options: Any) -> None:
        super().__init__(os.path.realpath(instance) if instance else None, **options)
        self._conn: Any = None
        self._started = False
        self._result: dict[str, Any] = {}

    # ------------------------------------------------------------ discovery and metadata

    @classmethod
    def discover(cls, volumes: list[Volume]) -> list[PostgresqlWriter]:
        found = []
        for p in processes({"postgres", "postmaster"}):
            if not p.cwd:
                continue
            pm = read_postmaster_pid(p.cwd)
            if pm is None or pm.get("pid") != str(p.pid):
                continue  # a backend, not the postmaster
            if on_volumes(p.cwd, volumes):
                found.append(cls(p.cwd))
        return found

    @property
    def datadir(self) -> str:
        if not self.instance:
            raise WriterError("no data directory given (use --writer postgresql:/path/to/data)")
        return self.instance

    def _paths(self) -> tuple[str, list[str]]:
        """pg_wal's real location and the tablespaces' (symlinks in pg_tblspc)."""
        wal = os.path.realpath(os.path.join(self.datadir, "pg_wal"))
        spaces = []
        tblspc = os.path.join(self.datadir, "pg_tblspc")
        if os.path.isdir(tblspc):
            spaces = [os.path.realpath(os.path.join(tblspc, n)) for n in sorted(os.listdir(tblspc))]
        return wal, spaces

    def identify(self) -> list[Component]:
        wal, spaces = self._paths()
        paths = [self.datadir]
        if not is_within(wal, self.datadir):
            paths.append(wal)
        paths += spaces
        self.components = [
            self.database_component(
                name=f"cluster {self.datadir}",
                paths=paths,
                reason="a base backup (pg_backup_start/stop) was open across the snapshot",
                metadata={
                    "data_directory": self.datadir,
                    "wal_directory": wal,
                    "tablespaces": spaces,
                    "exclude": list(RUNTIME_FILES),
                },
            )
        ]
        return self.components

    # ------------------------------------------------------------ the session

    def _where(self) -> dict[str, Any]:
        pm = read_postmaster_pid(self.datadir) or {}
        listen = pm.get("listen", "")
        if listen in ("*", "0.0.0.0", "::"):
            listen = "127.0.0.1"
        host = self.options.get("host") or pm.get("socket_dir") or listen or "/var/run/postgresql"
        port = int(self.options.get("port") or pm.get("port") or 5432)
        return {"host": host, "port": port}

    def _connect(self) -> Any:
        import psycopg

        where = self._where()
        if not self.options.get("host") and read_postmaster_pid(self.datadir) is None:
            raise WriterError(f"PostgreSQL is not running on {self.datadir} (no postmaster.pid)")
        try:
            return psycopg.connect(
                host=where["host"],
                port=where["port"],
                user=self.options.get("user", "postgres"),
                password=self.options.get("password"),
                dbname=self.options.get("dbname", "postgres"),
                autocommit=True,
                connect_timeout=10,
                application_name="shadowvault",
            )
        except psycopg.Error as err:
            detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise WriterError(
                f"cannot connect to PostgreSQL at {where['host']} port {where['port']}: {detail}"
            ) from err

    def probe(self) -> None:
        self._connect().close()

    def _query(self, sql: str, params: list[Any] | None = None) -> Any:
        """One statement; a cancel of the run cancels it on the server (pg_backup_start waiting for
        its checkpoint ends at once) and none starts once the run is cancelled: abort releases."""
        import psycopg

        cancellation.check(cancellation.current())
        try:
            with cancellation.interrupting(self._cancel_statement):
                return self._conn.execute(sql, params).fetchone()
        except psycopg.Error as err:
            raise WriterError(f"PostgreSQL refused `{sql.split('(')[0]}`: {str(err).strip()}") from err

    def _cancel_statement(self) -> None:
        """The driver's cancel request (to the postmaster, with the session's key: no second login,
        no privilege); the statement fails with query_canceled, a pg_backup_start also ends its backup."""
        self._conn.cancel_safe(timeout=CANCEL_TIMEOUT)

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken session must not mask the real failure
                log.debug("closing the PostgreSQL session failed", exc_info=True)
        self._conn = None
        self._started = False

    # ------------------------------------------------------------ events

    def prepare_backup(self, ctx: SnapshotContext) -> None:
        if not os.path.isdir(self.datadir):
            raise WriterError(f"data directory {self.datadir} does not exist")
        if not self.components:
            self.identify()
        outside = [p for p in self.components[0].paths if not on_volumes(p, ctx.volumes)]
        if outside:
            raise WriterError(
                f"{', '.join(outside)} not in the shadow set: add its volume, or the copy would be torn"
            )

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        if not self.components:
            self.identify()
        self._result = {}
        self._conn = self._connect()
        wal_level, blk_size, datadir = self._query(
            "select current_setting('wal_level'), current_setting('wal_block_size')::int,"
            " current_setting('data_directory')"
        )
        if wal_level == "minimal":
            raise WriterError("wal_level is minimal: an online backup needs wal_level = replica")
        if os.path.realpath(datadir) != self.datadir:
            raise WriterError(f"the server on {self._where()} serves {datadir}, not {self.datadir}")
        seg_bytes = self._query(
            "select setting::bigint * (case unit when '8kB' then 8192 when 'MB'"
            " then 1048576 else 1 end) from pg_settings where name = 'wal_segment_size'"
        )[0]
        self._result.update(
            wal_segment_size=int(seg_bytes),
            wal_block_size=int(blk_size),
            server_version=self._query("show server_version")[0],
        )
        start = self._query("select pg_backup_start(%s, fast => true)", [f"shadowvault {ctx.set_id}"])[0]
        self._started = True
        self._result["start_lsn"] = str(start)

    def freeze(self, ctx: SnapshotContext) -> None:
        self.mark_freeze()
        if not self._started:
            raise WriterError("the backup session was not started (prepare_snapshot did not run)")
        # Nothing is blocked: the base backup only has to be open while the providers commit.
        self._result["freeze_lsn"] = str(self._query("select pg_current_wal_insert_lsn()")[0])

    def thaw(self, ctx: SnapshotContext) -> None:
        """Nothing was blocked; the base backup stays open until post_snapshot, out of the window.

        (pg_backup_stop forces a WAL segment switch, tens of milliseconds: done here it would keep
        every other writer of the set held that much longer.)
        """

    def _stop_backup(self) -> None:
        if not self._started:
            raise WriterError("the base backup session was lost before it could be stopped")
        lsn, label, spcmap = self._query(
            "select lsn, labelfile, spcmapfile from pg_backup_stop(wait_for_archive => false)"
        )
        self._started = False
        self._result.update(stop_lsn=str(lsn), backup_label=label, tablespace_map=spcmap or "")

    def post_snapshot(self, ctx: SnapshotContext) -> None:
        try:
            self._stop_backup()
            self.require_copy_in_hold(
                ctx, self.components[0].paths, "a base backup needs its files copied before pg_backup_stop"
            )
            kept = self._keep_wal()
        finally:
            self._close()
        alone, why = self.grade(ctx, self.components[0].paths)
        size = sum(len(r[2]) for segment in kept for r in segment["ranges"])
        wal: list[dict[str, Any]] | None = kept
        limit = int(self.options.get("wal_max_bytes", DEFAULT_WAL_MAX))
        meta = self.components[0].metadata
        if size > limit:  # heavy writes between start and stop: do not bloat every manifest
            if not alone:
                raise WriterError(
                    f"{size} bytes of WAL between pg_backup_start and pg_backup_stop exceed wal_max_bytes "
                    f"({limit}) and the copy is not crash-consistent by itself ({why})"
                )
            wal = None
            meta["wal_note"] = f"WAL left out ({size} bytes > wal_max_bytes): restore by crash recovery"
        meta.update(self._result)
        meta.update(
            wal=wal,
            crash_consistent_alone=alone,
            crash_consistent_reason=why,
            freeze_started=self.freeze_started,
        )
        self.set_consistency(
            Consistency.APPLICATION,
            "base backup open across the snapshot; backup_label and the WAL to its end are in the manifest"
            + ("; also crash-consistent by itself" if alone else ""),
        )

    def backup_complete(self, ctx: SnapshotContext, succeeded: bool) -> None:
        self._close()

    def abort(self, ctx: SnapshotContext) -> None:
        if self._conn is not None:  # another thread may be stuck in a query: cancel it first
            try:
                self._cancel_statement()
            except Exception:
                log.debug("cancelling the PostgreSQL query failed", exc_info=True)
        self._close()  # ending the session cancels a non-exclusive backup

    def metadata(self) -> dict[str, Any]:
        meta = self.component_metadata()
        return {
            k: meta[k] for k in ("data_directory", "server_version", "start_lsn", "stop_lsn") if k in meta
        }

    # ------------------------------------------------------------ the WAL the copy needs

    def _keep_wal(self) -> list[dict[str, Any]]:
        """The WAL from the backup's redo point to its end, read from the live pg_wal, compressed."""
        label = self._result["backup_label"]
        m = re.search(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)", label)
        if not m:
            raise WriterError("backup_label has no START WAL LOCATION line")
        redo, timeline = parse_lsn(m.group(1)), int(m.group(2)[:8], 16)
        stop = parse_lsn(self._result["stop_lsn"])
        seg, blk = self._result["wal_segment_size"], self._result["wal_block_size"]
        wal_dir = self.components[0].metadata["wal_directory"]
        packer = zstandard.ZstdCompressor(level=3)
        kept = []
        for segno in range(redo // seg, (stop - 1) // seg + 1):
            name = wal_file_name(timeline, segno, seg)
            begin = (redo % seg) // blk * blk if segno == redo // seg else 0
            end = seg if segno < (stop - 1) // seg else -(-((stop - 1) % seg + 1) // blk) * blk
            ranges = [(0, blk)] if begin > 0 else []
            ranges.append((begin, end - begin))
            try:
                with open(os.path.join(wal_dir, name), "rb") as f:
                    chunks = [(off, os.pread(f.fileno(), length, off)) for off, length in ranges]
            except FileNotFoundError as err:
                raise WriterError(f"WAL segment {name} was removed before it could be kept; retry") from err
            for off, data in chunks:
                (pageaddr,) = struct.unpack_from("<Q", data, XLOG_PAGE_MAGIC_OFFSET)
                if pageaddr != segno * seg + off:
                    raise WriterError(f"WAL segment {name} was recycled before it could be kept; retry")
            kept.append(
                {
                    "file": name,
                    "size": seg,
                    "ranges": [
                        [off, len(data), base64.b64encode(packer.compress(data)).decode()]
                        for off, data in chunks
                    ],
                }
            )
        return kept

    # ------------------------------------------------------------ restore

    def _restored_components(self, ctx: RestoreContext) -> list[Component]:
        return [c for c in ctx.components if c.writer == self.name]

    def pre_restore(self, ctx: RestoreContext) -> None:
        for component in self._restored_components(ctx):
            datadir = restored_path(ctx, component.metadata.get("data_directory") or component.paths[0])
            stop_cluster(datadir)
            set_aside(datadir, ctx)

    def post_restore(self, ctx: RestoreContext) -> None:
        for component in self._restored_components(ctx):
            datadir = restored_path(ctx, component.metadata.get("data_directory") or component.paths[0])
            prepare_restored_cluster(
                datadir, component.metadata, ctx, mode=ctx.options.get("postgresql_mode", "auto")
            )
            if ctx.options.get("start", True):
                start_cluster(
                    datadir, ctx, self.options.get("user", "postgres"), self.options.get("password")
                )
