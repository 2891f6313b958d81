"""The restore half of the PostgreSQL writer: the cluster on disk, stopped, made startable, started.

A laid-down copy becomes a cluster again in three steps: runtime files of the original are dropped,
backup_label, tablespace_map (pointing at the copy's own tablespaces) and the WAL the manifest kept
are written, and the cluster is started with the binaries of its major version and waited for
until recovery has finished.
"""

from __future__ import annotations

import base64
import logging
import os
import pwd
import shlex
import shutil
import time
from typing import Any

import zstandard

from shadowvault import proc
from shadowvault.errors import CommandError, WriterError
from shadowvault.shadow.writers.appwriter import restored_path
from shadowvault.shadow.writers.base import RestoreContext

log = logging.getLogger(__name__)

REFUSED_LOGIN = ("authentication failed", "no password supplied")  # libpq: the server said no
RUNTIME_FILES = ("postmaster.pid", "postmaster.opts", "backup_label.old", "tablespace_map.old")


def read_postmaster_pid(datadir: str) -> dict[str, str] | None:
    """The lines of postmaster.pid: pid, data directory, start time, port, socket dir, listen address."""
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    keys = ("pid", "datadir", "start", "port", "socket_dir", "listen", "shmem", "status")
    return {k: v.strip() for k, v in zip(keys, lines, strict=False)}


def running_postmaster(datadir: str) -> int | None:
    """The PID of the postmaster serving `datadir` right now, or None.

    A copied postmaster.pid names the ORIGINAL cluster's postmaster: only trust a PID whose
    process really works in this directory, or a restore would stop the live server.
    """
    pm = read_postmaster_pid(datadir)
    if not pm or not pm.get("pid", "").isdigit():
        return None
    pid = int(pm["pid"])
    real = os.path.realpath(datadir)
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    return pid if os.path.realpath(pm.get("datadir", "")) == real and cwd == real else None


def pg_bin_dir(datadir: str) -> str:
    """The binaries matching the cluster's major version (Debian layout), else whatever is on PATH."""
    try:
        with open(os.path.join(datadir, "PG_VERSION")) as f:
            version = f.read().strip()
    except OSError:
        version = ""
    candidate = f"/usr/lib/postgresql/{version}/bin"
    if version and os.path.isdir(candidate):
        return candidate
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else candidate


def owner_of(path: str) -> tuple[int, int, str]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, pwd.getpwuid(st.st_uid).pw_name


def as_owner(user: str, argv: list[str]) -> list[str]:
    """Run `argv` as the cluster's owner (pg_ctl refuses to run as root)."""
    if os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *argv]
    return argv


def stop_cluster(datadir: str) -> None:
    """Stop the cluster running on `datadir` (fast shutdown), if one really runs there."""
    if running_postmaster(datadir) is None:
        return
    _uid, _gid, user = owner_of(datadir)
    log.info("stopping the PostgreSQL cluster on %s before restoring it", datadir)
    pg_ctl = os.path.join(pg_bin_dir(datadir), "pg_ctl")
    try:
        proc.run(
            as_owner(user, [pg_ctl, "-D", datadir, "-m", "fast", "-w", "-t", "120", "stop"]), timeout=150
        )
    except CommandError as err:
        raise WriterError(f"cannot stop the cluster on {datadir}: {err}") from err


def start_cluster(datadir: str, ctx: RestoreContext, user: str, password: str | None) -> None:
    """Start the restored cluster on `datadir` and wait until it has recovered (connecting as `user`)."""
    _uid, _gid, owner = owner_of(datadir)
    opts = []
    if ctx.options.get("port"):
        opts += ["-p", str(ctx.options["port"])]
    if ctx.options.get("socket_dir"):
        opts += ["-k", str(ctx.options["socket_dir"])]
    logfile = ctx.options.get("log_file") or os.path.join(datadir, "shadowvault-restore.log")
    argv = [os.path.join(pg_bin_dir(datadir), "pg_ctl"), "-D", datadir, "-l", logfile, "-w", "-t", "600"]
    if opts:
        argv += ["-o", shlex.join(opts)]
    try:
        proc.run(as_owner(owner, [*argv, "start"]), timeout=660)
    except CommandError as err:
        raise WriterError(f"the restored cluster on {datadir} did not start ({err}); see {logfile}") from err
    wait_recovered(datadir, ctx, user, password)


def wait_recovered(datadir: str, ctx: RestoreContext, user: str, password: str | None) -> None:
    """Wait until the cluster on `datadir` answers and is out of recovery (recovery_timeout, 600 s)."""
    import psycopg

    pm = read_postmaster_pid(datadir) or {}
    host = ctx.options.get("socket_dir") or pm.get("socket_dir") or pm.get("listen")
    port = int(ctx.options.get("port") or pm.get("port") or 5432)
    deadline = time.monotonic() + float(ctx.options.get("recovery_timeout", 600))
    while True:
        try:
            with psycopg.connect(
                host=host, port=port, user=user, password=password, dbname="postgres", connect_timeout=10
            ) as conn:
                row = conn.execute("select pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
        except psycopg.OperationalError as err:
            if any(why in str(err) for why in REFUSED_LOGIN):  # final: waiting changes nothing
                raise WriterError(
                    f"the restored cluster on {datadir} started but refuses {user!r}: {last_line(err)}"
                    " (the writers.d entry of this instance gives the user and password post_restore uses)"
                ) from err
            if time.monotonic() > deadline:
                raise WriterError(f"the restored cluster on {datadir} does not answer: {err}") from err
        if time.monotonic() > deadline:
            raise WriterError(f"the restored cluster on {datadir} is still in recovery")
        time.sleep(0.1)


def last_line(err: BaseException) -> str:
    """libpq's messages end with the server's own line (`FATAL: ...`): the one that says why."""
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else type(err).__name__


def relocate_tablespaces(spcmap: str, ctx: RestoreContext | None) -> str:
    """The tablespace_map for where the restore put the tablespaces.

    PostgreSQL recreates pg_tblspc/<oid> from this map at startup: a copy restored elsewhere must
    point at its own tablespace files, never at the original cluster's live ones.
    """
    if ctx is None or ctx.target_root in ("", "/"):
        return spcmap
    lines = []
    for line in spcmap.splitlines():
        oid, sep, path = line.partition(" ")
        lines.append(f"{oid} {restored_path(ctx, path)}" if sep and path.startswith("/") else line)
    return "\n".join(lines) + "\n"


def prepare_restored_cluster(
    datadir: str, meta: dict[str, Any], ctx: RestoreContext | None = None, mode: str = "auto"
) -> None:
    """Make a laid-down copy startable: drop runtime files, write backup_label and the kept WAL.

    mode "backup_label" restores the base backup; mode "crash" starts the copy by plain crash
    recovery, which is only right when the manifest says it is crash-consistent by itself; "auto"
    (default) takes the backup_label unless the manifest kept no WAL.
    """
    if mode == "auto":
        mode = "crash" if meta.get("wal") is None and meta.get("crash_consistent_alone") else "backup_label"
    if not os.path.isdir(datadir):
        raise WriterError(f"the restored data directory {datadir} does not exist")
    uid, gid, _user = owner_of(datadir)
    os.chmod(datadir, 0o700)
    for name in (*RUNTIME_FILES, "backup_label", "tablespace_map"):
        try:
            os.unlink(os.path.join(datadir, name))
        except FileNotFoundError:
            pass
    if mode == "crash":
        if not meta.get("crash_consistent_alone"):
            raise WriterError(
                f"{datadir}: the copy is not crash-consistent by itself; restore with its backup_label"
            )
        return
    if "backup_label" not in meta:
        raise WriterError(f"{datadir}: the manifest holds no backup_label for this cluster")
    wal_dir = os.path.join(datadir, "pg_wal")
    if os.path.islink(wal_dir) and ctx is not None:
        wal_dir = restored_path(ctx, meta.get("wal_directory", os.path.realpath(wal_dir)))
    unpacker = zstandard.ZstdDecompressor()
    for segment in meta.get("wal") or []:
        path = os.path.join(wal_dir, segment["file"])
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < segment["size"]:
                os.ftruncate(fd, segment["size"])
            for offset, length, packed in segment["ranges"]:
                data = unpacker.decompress(base64.b64decode(packed), max_output_size=length)
                os.pwrite(fd, data, offset)
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
    files = {"backup_label": meta["backup_label"]}
    if meta.get("tablespace_map"):
        files["tablespace_map"] = relocate_tablespaces(meta["tablespace_map"], ctx)
    for name, text in files.items():
        path = os.path.join(datadir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chown(path, uid, gid)
        os.chmod(path, 0o600)
    log.info("%s: backup_label and %d kept WAL segment(s) written", datadir, len(meta.get("wal") or []))
