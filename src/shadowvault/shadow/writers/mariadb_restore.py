"""The restore half of the MariaDB / MySQL writer: the server on a data directory, stopped and checked.

Before files are laid down, a server working in the target data directory is stopped (SIGTERM, as
its service manager would); after they are, a restored copy's binlog index is pointed at its own
binary logs, and once the server runs again every table is checked (CHECK TABLE) after InnoDB's
crash recovery.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from shadowvault.errors import WriterError
from shadowvault.shadow.writers.appwriter import option_value, processes, restored_path
from shadowvault.shadow.writers.base import RestoreContext

log = logging.getLogger(__name__)

SYSTEM_SCHEMAS = ("information_schema", "performance_schema", "sys")


def server_for(datadir: str) -> int | None:
    """The PID of a mariadbd/mysqld working in `datadir` (its cwd is the data directory)."""
    real = os.path.realpath(datadir)
    for p in processes({"mariadbd", "mysqld"}):
        if p.cwd == real:
            return p.pid
    return None


def socket_of(datadir: str) -> str | None:
    """The `--socket` of the server working in `datadir`: the restored copy, whatever started it."""
    real = os.path.realpath(datadir)
    for p in processes({"mariadbd", "mysqld"}):
        if p.cwd == real:
            return option_value(p.argv, "--socket")
    return None


def stop_server(datadir: str, timeout: float = 300) -> None:
    """Stop the server working in `datadir` (SIGTERM) and wait until it has ended."""
    pid = server_for(datadir)
    if pid is None:
        return
    log.info("stopping the MariaDB server (pid %d) on %s before restoring it", pid, datadir)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while server_for(datadir) == pid:
        if time.monotonic() > deadline:
            raise WriterError(f"the MariaDB server on {datadir} did not stop")
        time.sleep(0.05)


def check_tables(
    socket: str | None, user: str, password: str, timeout: float = 600, *, datadir: str
) -> dict[str, int]:
    """Wait for the restored server (InnoDB recovery), then CHECK TABLE every table.

    Without a `socket` option the server is the one working in `datadir`, on its own `--socket`:
    never the default socket or localhost:3306, where another server (the original one, when the
    copy went to another root) would answer and be checked instead.
    """
    import pymysql

    deadline = time.monotonic() + timeout
    why = "no MariaDB server runs in it"
    while True:
        where = socket or socket_of(datadir)
        if where:
            try:
                conn = pymysql.connect(unix_socket=where, user=user, password=password, autocommit=True)
                break
            except pymysql.Error as err:
                why = f"it does not answer on {where}: {err}"
        if time.monotonic() > deadline:
            raise WriterError(
                f"the restored server on {datadir} was not checked within {timeout:g} s: {why}"
                " (give its socket with --writer-option socket=PATH)"
            )
        time.sleep(0.1)
    checked = 0
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select table_schema, table_name from information_schema.tables"
                " where table_type = 'BASE TABLE' and table_schema not in %s",
                [SYSTEM_SCHEMAS],
            )
            for schema, table in cur.fetchall():
                cur.execute(f"check table `{schema}`.`{table}`")
                for row in cur.fetchall():
                    if row[2] == "error" or (
                        row[2] == "status" and row[3] not in ("OK", "Table is already up to date")
                    ):
                        raise WriterError(f"CHECK TABLE {schema}.{table} after restore: {row[3]}")
                checked += 1
    finally:
        conn.close()
    return {"tables_checked": checked}


def relocate_binlog_index(index_path: str, ctx: RestoreContext) -> None:
    """Point a restored copy's binlog index at its own binary logs, never at the original server's.

    An index lists absolute paths when log_bin_basename is absolute; relative entries stay.
    """
    if not os.path.exists(index_path):
        return
    with open(index_path) as f:
        lines = f.read().splitlines()
    moved = [restored_path(ctx, line) if line.startswith("/") else line for line in lines]
    if moved != lines:
        with open(index_path, "w") as f:
            f.write("\n".join(moved) + "\n")
