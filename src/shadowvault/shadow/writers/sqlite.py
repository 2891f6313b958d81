"""The sqlite writer: makes a registered SQLite database exactly its committed state in the shadow.

prepare_snapshot checkpoints the WAL (TRUNCATE) so the shadow's -wal is short; freeze takes the
database's write lock with BEGIN IMMEDIATE on a connection kept open until thaw: writers wait (up
to their busy timeout), readers go on. Every committed transaction is then in the main file or the
-wal, and no transaction is half-written, so the shadow's files open as that committed state. The
lock belongs to this process: if the coordinator dies, the kernel releases it (no watchdog action).

Where another connection holds a lock, the writer waits for it in Python (sqlite_waits.py), up to
the freeze timeout, so that a cancel of the run or an abort of the set ends the wait at once:
SQLite's busy handler cannot be interrupted. A freeze cut short holds nothing (the lock was never
taken, or abort rolls it back), so a cancel reaches the freeze too (`freeze_can_be_cancelled`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

from shadowvault import cancellation
from shadowvault.errors import NotFoundError, WriterError
from shadowvault.shadow.manifest import Component, RestoreMethod
from shadowvault.shadow.volumes import Volume, volume_of
from shadowvault.shadow.writers import config
from shadowvault.shadow.writers.base import RestoreContext, SnapshotContext, Writer
from shadowvault.shadow.writers.sqlite_waits import StillBusy, until_free

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm", "-journal")
T = TypeVar("T")


class SqliteWriter(Writer):
    """One SQLite database (instance = its absolute path)."""

    name = "sqlite"
    freeze_can_be_cancelled = True  # a BEGIN IMMEDIATE still waiting holds nothing; abort rolls back

    def __init__(self, instance: str | None = None, **options) -> None:
        if not instance:
            raise WriterError("the sqlite writer needs a database: --writer sqlite:/path/to/db")
        super().__init__(os.path.abspath(instance), **options)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._freezing = threading.Lock()  # held while BEGIN IMMEDIATE waits for the write lock
        self._aborted = False
        self.journal_mode = ""

    @classmethod
    def discover(cls, volumes: list[Volume]) -> list[SqliteWriter]:
        """The databases registered in `<config>/sqlite.toml` that lie on `volumes`."""
        mounts = {v.mount_point for v in volumes}
        found = []
        for database in config.sqlite_registry():
            try:
                if os.path.exists(database) and volume_of(database).mount_point in mounts:
                    found.append(cls(database))
            except NotFoundError:
                continue
        return found

    @property
    def database(self) -> str:
        assert self.instance
        return self.instance

    def identify(self) -> list[Component]:
        if not os.path.isfile(self.database):
            raise NotFoundError(f"sqlite:{self.database}: no such database file")
        return [
            Component(
                name=os.path.basename(self.database),
                writer=self.name,
                instance=self.instance,
                kind="database",
                paths=[self.database] + [self.database + s for s in SIDE_FILES],
                restore_method=RestoreMethod.RESTORE_IF_CAN_REPLACE,
                metadata={"journal_mode": self.journal_mode} if self.journal_mode else {},
            )
        ]

    def _connect(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                # autocommit (isolation_level=None): we issue BEGIN/ROLLBACK ourselves; no busy
                # timeout: a lock is waited for in _waiting, where a cancel or an abort ends the wait
                conn = sqlite3.connect(
                    self.database, timeout=0, isolation_level=None, check_same_thread=False
                )
                try:
                    mode = self._waiting(lambda: conn.execute("PRAGMA journal_mode").fetchone()[0])
                except BaseException:
                    conn.close()
                    raise
                self.journal_mode, self._conn = mode, conn
            return self._conn

    def _waiting(self, attempt: Callable[[], T]) -> T:
        """`attempt()` once no other connection's lock is in its way (within the freeze timeout); a
        cancel of the run (where the event may be cut short) or an abort of the set ends the wait."""
        return until_free(attempt, timeout=self.freeze_timeout, stop=self._stop_waiting)

    def _stop_waiting(self) -> None:
        cancellation.check(cancellation.current())
        if self._aborted:
            raise WriterError("aborted while waiting for a lock of the database")

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        conn = self._connect()
        if self.journal_mode.lower() != "wal":
            return

        def checkpoint() -> None:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:  # a reader uses the -wal, or a writer holds the lock: the frames it could are copied
                raise StillBusy("readers or a writer are active")

        try:
            self._waiting(checkpoint)
        except StillBusy:
            log.info(
                "sqlite:%s: WAL checkpoint could not finish (readers or a writer active); the -wal is kept",
                self.database,
            )

    def freeze(self, ctx: SnapshotContext) -> None:
        with self._freezing:
            if self._aborted:
                raise WriterError("aborted before freezing")
            conn = self._connect()
            try:  # RESERVED (rollback journal) / WAL write lock: readers go on
                self._waiting(lambda: conn.execute("BEGIN IMMEDIATE"))
            except (sqlite3.Error, StillBusy) as err:
                raise WriterError(f"cannot lock {self.database} against writers: {err}") from err
            if self._aborted:  # abandoned while we waited for the lock: let go at once
                self._release()
                raise WriterError("aborted while freezing; released the lock again")

    def thaw(self, ctx: SnapshotContext) -> None:
        self._release()

    def abort(self, ctx: SnapshotContext) -> None:
        self._aborted = True  # a BEGIN IMMEDIATE still waiting for the lock gives up at its next try
        # Wait for a freeze in flight (it sees the abort within sqlite_waits.LONGEST_PAUSE) before closing.
        if self._freezing.acquire(timeout=self.freeze_timeout + 5):
            try:
                self._release()
            finally:
                self._freezing.release()
        else:
            log.warning(
                "sqlite:%s: a freeze is still waiting for the lock; it is released when it returns",
                self.database,
            )

    def backup_complete(self, ctx: SnapshotContext, succeeded: bool) -> None:
        self._release()

    def post_restore(self, ctx: RestoreContext) -> None:
        """The restored database must open and pass `PRAGMA integrity_check` (its -wal, when the
        backup had one, is replayed by that first open), or the restore says so."""
        for component in ctx.components:
            if component.writer != self.name or not component.paths:
                continue
            path = component.paths[0]
            restored = (
                path if ctx.target_root in ("", "/") else os.path.join(ctx.target_root, path.lstrip("/"))
            )
            try:
                conn = sqlite3.connect(restored, timeout=30)
                try:
                    problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
                finally:
                    conn.close()
            except sqlite3.Error as err:
                raise WriterError(f"the restored database {restored} does not open: {err}") from err
            if problems != ["ok"]:
                raise WriterError(
                    f"the restored database {restored} fails its integrity check: {problems[0]}"
                )

    def metadata(self) -> dict:
        return {"journal_mode": self.journal_mode} if self.journal_mode else {}

    def _release(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as err:
            log.warning("sqlite:%s: rollback failed: %s", self.database, err)
        finally:
            conn.close()
