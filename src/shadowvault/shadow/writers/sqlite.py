"""The sqlite writer: makes a registered SQLite database exactly its committed state in the shadow.

prepare_snapshot checkpoints the WAL (TRUNCATE) so the shadow's -wal is short; freeze takes the
database's write lock with BEGIN IMMEDIATE on a connection kept open until thaw: writers wait (up
to their busy timeout), readers go on. Every committed transaction is then in the main file or the
-wal, and no transaction is half-written, so the shadow's files open as that committed state. The
lock belongs to this process: if the coordinator dies, the kernel releases it (no watchdog action).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

from shadowvault.errors import NotFoundError, WriterError
from shadowvault.shadow.manifest import Component, RestoreMethod
from shadowvault.shadow.volumes import Volume, volume_of
from shadowvault.shadow.writers import config
from shadowvault.shadow.writers.base import SnapshotContext, Writer

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm", "-journal")


class SqliteWriter(Writer):
    """One SQLite database (instance = its absolute path)."""

    name = "sqlite"

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
                # autocommit (isolation_level=None): we issue BEGIN/ROLLBACK ourselves.
                conn = sqlite3.connect(
                    self.database, timeout=self.freeze_timeout, isolation_level=None, check_same_thread=False
                )
                self.journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                self._conn = conn
            return self._conn

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        conn = self._connect()
        if self.journal_mode.lower() == "wal":
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                log.info(
                    "sqlite:%s: WAL checkpoint could not finish (readers active); the -wal is kept",
                    self.database,
                )

    def freeze(self, ctx: SnapshotContext) -> None:
        with self._freezing:
            if self._aborted:
                raise WriterError("aborted before freezing")
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")  # RESERVED (rollback journal) / WAL write lock: readers go on
            except sqlite3.Error as err:
                raise WriterError(f"cannot lock {self.database} against writers: {err}") from err
            if self._aborted:  # abandoned while we waited for the lock: let go at once
                self._release()
                raise WriterError("aborted while freezing; released the lock again")

    def thaw(self, ctx: SnapshotContext) -> None:
        self._release()

    def abort(self, ctx: SnapshotContext) -> None:
        self._aborted = True
        conn = self._conn
        if conn is not None:
            conn.interrupt()  # a BEGIN IMMEDIATE still waiting for the lock gives up
        # Wait for a freeze in flight (its busy timeout is the freeze timeout) before closing.
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
