"""The MariaDB / MySQL writer: BACKUP STAGE (or FLUSH TABLES WITH READ LOCK) held in one session.

MariaDB >= 10.4: `BACKUP STAGE START` and `FLUSH` at prepare_snapshot (flushing non-transactional
tables is the slow part), `BLOCK_DDL` and `BLOCK_COMMIT` at freeze, `BACKUP STAGE END` at thaw; the
binary log position is read under BLOCK_COMMIT, where it cannot move. Older MariaDB and MySQL get
`FLUSH TABLES WITH READ LOCK` at freeze and `UNLOCK TABLES` at thaw. Every lock lives in the one
session, so if the coordinator dies the server drops them itself (no watchdog action needed).

InnoDB writes in the background even while commits are blocked, so its files are only consistent
in an atomic image; a provider that copies file by file (reflink) or reads live files cannot give
a restorable copy, and the writer fails post_snapshot for them (abort or degrade, as configured).

Restore (mariadb_restore.py): pre_restore stops the server running on the target data directory,
the files are laid down, post_restore removes stale pid files, starts the server (the
`start_command` option) and checks every table with CHECK TABLE after InnoDB's crash recovery.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from shadowvault import cancellation, proc
from shadowvault.errors import CommandError, WriterError
from shadowvault.paths_within import is_within
from shadowvault.shadow.manifest import Component
from shadowvault.shadow.volumes import Volume
from shadowvault.shadow.writers import app_settings as S
from shadowvault.shadow.writers.appwriter import (
    AppWriter,
    on_volumes,
    option_value,
    processes,
    restored_path,
    set_aside,
)
from shadowvault.shadow.writers.base import RestoreContext, SnapshotContext
from shadowvault.shadow.writers.mariadb_restore import (
    check_tables,
    relocate_binlog_index,
    server_for,
    stop_server,
)

log = logging.getLogger(__name__)

DEFAULT_SOCKETS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/tmp/mysql.sock")


class MariadbWriter(AppWriter):
    """One MariaDB or MySQL server, named by its data directory.

    Options: socket (unix socket path) or host + port, user (default root), password,
    lock_method (auto | backup_stage | ftwrl). Without a socket the writer reads `--socket` from
    the running server's command line.
    """

    name = "mariadb"
    settings = {
        "host": S.STRING,
        "port": S.INTEGER,
        "socket": S.STRING,
        "user": S.STRING,
        "lock_method": S.STRING,
    }
    freeze_can_be_cancelled = True  # a killed FTWRL or BACKUP STAGE holds nothing; abort ends the session

    def __init__(self, instance: str | None = None, **options: Any) -> None:
        super().__init__(os.path.realpath(instance) if instance else None, **options)
        self._conn: Any = None
        self._conn_id: int | None = None
        self._method = ""
        self._held = False
        self._result: dict[str, Any] = {}

    # ------------------------------------------------------------ discovery and metadata

    @classmethod
    def discover(cls, volumes: list[Volume]) -> list[MariadbWriter]:
        found = []
        for p in processes({"mariadbd", "mysqld"}):
            datadir = option_value(p.argv, "--datadir") or p.cwd
            if not datadir or not on_volumes(datadir, volumes):
                continue
            options = {}
            sock = option_value(p.argv, "--socket")
            if sock:
                options["socket"] = sock
            found.append(cls(datadir, **options))
        return found

    @property
    def datadir(self) -> str:
        if not self.instance:
            raise WriterError("no data directory given (use --writer mariadb:/path/to/datadir)")
        return self.instance

    def identify(self) -> list[Component]:
        paths = [self.datadir]
        for extra in self._result.get("extra_paths", []):
            if extra not in paths:
                paths.append(extra)
        self.components = [
            self.database_component(
                name=f"server {self.datadir}",
                paths=paths,
                reason="commits and DDL blocked in one session while the atomic shadow was taken",
                metadata={
                    "data_directory": self.datadir,
                    **{k: v for k, v in self._result.items() if k != "extra_paths"},
                },
            )
        ]
        return self.components

    # ------------------------------------------------------------ the session

    def _socket(self) -> str | None:
        if self.options.get("socket"):
            return str(self.options["socket"])
        if self.options.get("host"):
            return None
        pid = server_for(self.datadir)
        if pid is not None:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
                sock = option_value(argv, "--socket")
                if sock:
                    return sock
            except OSError:
                pass
        return next((s for s in DEFAULT_SOCKETS if os.path.exists(s)), DEFAULT_SOCKETS[0])

    def _connect(self) -> Any:
        import pymysql

        sock = self._socket()
        where = f"socket {sock}" if sock else f"{self.options['host']}:{self.options.get('port', 3306)}"
        timeout = max(int(self.freeze_timeout), 1)
        try:
            conn = pymysql.connect(
                unix_socket=sock,
                host=self.options.get("host") or "localhost",
                port=int(self.options.get("port", 3306)),
                user=self.options.get("user", "root"),
                password=self.options.get("password") or "",
                autocommit=True,
                connect_timeout=10,
                read_timeout=timeout + 30,
                write_timeout=30,
            )
        except pymysql.Error as err:
            raise WriterError(f"cannot connect to MariaDB at {where}: {_message(err)}") from err
        return conn

    def probe(self) -> None:
        self._connect().close()

    def _sql(self, sql: str) -> list[tuple]:
        """One statement; a cancel of the run kills it on the server (a BACKUP STAGE waiting for a
        lock ends at once) and none starts once the run is cancelled: abort releases."""
        import pymysql

        cancellation.check(cancellation.current())
        try:
            with cancellation.interrupting(lambda: self._kill("query")), self._conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        except pymysql.Error as err:
            raise WriterError(f"MariaDB refused `{sql}`: {_message(err)}") from err

    def _kill(self, what: str) -> None:
        """`KILL QUERY` (the statement fails, the session stays) or `KILL CONNECTION` (the server drops
        the session and everything it holds) of the writer's session, from a second one: pymysql has
        no cancel of its own, and the first session is blocked in its statement."""
        conn_id = self._conn_id
        if conn_id is None:
            return
        killer = self._connect()
        try:
            with killer.cursor() as cur:
                cur.execute(f"kill {what} {int(conn_id)}")
        finally:
            killer.close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                log.debug("closing the MariaDB session failed", exc_info=True)
        self._conn = None
        self._conn_id = None
        self._held = False

    # ------------------------------------------------------------ events

    def prepare_backup(self, ctx: SnapshotContext) -> None:
        if not os.path.isdir(self.datadir):
            raise WriterError(f"data directory {self.datadir} does not exist")

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        self._result = {}
        self._conn = self._connect()
        version, datadir, log_bin, conn_id = self._sql(
            "select version(), @@datadir, @@log_bin, connection_id()"
        )[0]
        self._conn_id = int(conn_id)
        if os.path.realpath(datadir) != self.datadir:
            raise WriterError(f"the server at {self._socket()} serves {datadir}, not {self.datadir}")
        extra = []
        for var in ("innodb_data_home_dir", "innodb_log_group_home_dir", "log_bin_basename"):
            rows = self._sql(f"show global variables like '{var}'")
            if rows and rows[0][1]:
                path = rows[0][1] if var != "log_bin_basename" else os.path.dirname(rows[0][1])
                path = os.path.realpath(os.path.join(self.datadir, path))
                if not is_within(path, self.datadir):
                    extra.append(path)
        self._result.update(server_version=version, log_bin=bool(log_bin), extra_paths=extra)
        index = self._sql("show global variables like 'log_bin_index'")
        if index and index[0][1]:
            self._result["log_bin_index"] = os.path.join(self.datadir, index[0][1])
        # The server's own bound on waiting for locks, so a freeze cannot hang in the server.
        self._sql(f"set session lock_wait_timeout = {max(int(self.freeze_timeout), 1)}")
        wanted = self.options.get("lock_method", "auto")
        if wanted not in ("auto", "backup_stage", "ftwrl"):
            raise WriterError(f"lock_method must be auto, backup_stage or ftwrl, not {wanted!r}")
        if wanted == "backup_stage" and not _has_backup_stage(version):
            raise WriterError(f"BACKUP STAGE needs MariaDB 10.4 or later (the server is {version})")
        if wanted != "ftwrl" and _has_backup_stage(version):
            self._method = "backup_stage"
            self._held = True
            self._sql("backup stage start")
            self._sql("backup stage flush")
        else:
            self._method = "ftwrl"
        self._result["method"] = self._method

    def freeze(self, ctx: SnapshotContext) -> None:
        self.mark_freeze()
        if self._conn is None:
            raise WriterError("no session (prepare_snapshot did not run)")
        if self._method == "backup_stage":
            self._sql("backup stage block_ddl")
            self._sql("backup stage block_commit")
        else:
            self._held = True
            self._sql("flush tables with read lock")
        self._result["freeze_started"] = self.freeze_started
        if self._result.get("log_bin"):
            rows = self._sql("show master status")
            if rows:
                self._result.update(binlog_file=rows[0][0], binlog_position=int(rows[0][1]))
            gtid = (
                self._sql("select @@global.gtid_binlog_pos")
                if "MariaDB" in self._result.get("server_version", "")
                else []
            )
            if gtid and gtid[0][0]:
                self._result["gtid_binlog_pos"] = gtid[0][0]

    def thaw(self, ctx: SnapshotContext) -> None:
        if not self._held or self._conn is None:
            return
        statement = "backup stage end" if self._method == "backup_stage" else "unlock tables"
        try:
            self._sql(statement)
        except WriterError as err:
            self._close()
            raise WriterError(f"the session holding the locks was lost during the freeze ({err})") from err
        self._held = False

    def post_snapshot(self, ctx: SnapshotContext) -> None:
        self._close()
        paths = self.components[0].paths if self.components else [self.datadir]
        self.require_copy_in_hold(ctx, paths, "InnoDB needs an atomic shadow")
        alone, why = self.grade(ctx, paths)
        if not alone:
            raise WriterError(f"InnoDB files need one atomic shadow, but {why}")
        for component in self.components:
            component.metadata.update({k: v for k, v in self._result.items() if k != "extra_paths"})

    def backup_complete(self, ctx: SnapshotContext, succeeded: bool) -> None:
        self._close()

    def abort(self, ctx: SnapshotContext) -> None:
        try:  # a freeze may be stuck in the server: the session ends, the server drops its locks
            self._kill("connection")
        except Exception:
            log.debug("killing the MariaDB backup session failed", exc_info=True)
        if self._conn is not None:
            try:
                self._conn._force_close()
            except Exception:
                log.debug("closing the MariaDB socket failed", exc_info=True)
        self._conn = None
        self._conn_id = None
        self._held = False

    def metadata(self) -> dict[str, Any]:
        keep = (
            "data_directory",
            "server_version",
            "method",
            "binlog_file",
            "binlog_position",
            "gtid_binlog_pos",
        )
        meta = self.component_metadata()
        return {k: meta[k] for k in keep if k in meta}

    # ------------------------------------------------------------ restore

    def pre_restore(self, ctx: RestoreContext) -> None:
        for component in ctx.components:
            if component.writer != self.name:
                continue
            datadir = restored_path(ctx, component.metadata.get("data_directory") or component.paths[0])
            stop_server(datadir, float(ctx.options.get("stop_timeout", 300)))
            set_aside(datadir, ctx)  # newer binlogs and tables must not mix with the restored files

    def post_restore(self, ctx: RestoreContext) -> None:
        for component in ctx.components:
            if component.writer != self.name:
                continue
            datadir = restored_path(ctx, component.metadata.get("data_directory") or component.paths[0])
            if not os.path.isdir(datadir):
                raise WriterError(f"the restored data directory {datadir} does not exist")
            for name in os.listdir(datadir):
                if name.endswith(".pid"):
                    os.unlink(os.path.join(datadir, name))
            index = component.metadata.get("log_bin_index")
            if index and ctx.target_root not in ("", "/"):
                relocate_binlog_index(restored_path(ctx, index), ctx)
            start = ctx.options.get("start_command")
            if start:
                try:
                    proc.run(list(start), timeout=float(ctx.options.get("start_timeout", 600)))
                except CommandError as err:
                    raise WriterError(f"the restored server on {datadir} did not start: {err}") from err
            if start or ctx.options.get("check", False):
                in_place = ctx.target_root in ("", "/")  # elsewhere, the writers.d socket is the original's
                check_tables(
                    ctx.options.get("socket") or (self.options.get("socket") if in_place else None),
                    self.options.get("user", "root"),
                    self.options.get("password") or "",
                    float(ctx.options.get("start_timeout", 600)),
                    datadir=datadir,
                )


def _has_backup_stage(version: str) -> bool:
    """BACKUP STAGE exists in MariaDB 10.4.1 and later."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return m is not None and "MariaDB" in version and (int(m.group(1)), int(m.group(2))) >= (10, 4)


def _message(err: BaseException) -> str:
    args: tuple[object, ...] = err.args
    if len(args) >= 2 and isinstance(args[1], str):
        return f"{args[1]} (error {args[0]})"
    return str(err) or type(err).__name__
