"""The Redis writer: the RDB produced by a BGSAVE started at freeze, and the AOF when it is on.

The consistent point of an RDB is the fork of its BGSAVE: everything acknowledged before the fork
is in it. So the BGSAVE is started at freeze (not earlier: writes acknowledged between
prepare_snapshot and freeze would be missing) and the freeze returns once that save has finished
and renamed its file into place, found by the `rdb_saves` counter of INFO persistence (LASTSAVE
has one-second resolution and cannot tell two saves apart). Redis keeps serving meanwhile.

With appendonly on, the AOF directory is a component too: acknowledged writes are already written
to it, so an atomic shadow holds them; automatic AOF rewrites are suspended from prepare_snapshot
to thaw so the manifest and its files do not change under a copy.

A cancel of the run ends the writer's waits at their next poll (every few ms): for an AOF rewrite
at prepare_snapshot, for the BGSAVE at freeze. A freeze cut short holds nothing (the save goes on
in the server and ends by itself; abort restores the AOF rewrite setting), so a cancel reaches the
freeze too (`freeze_can_be_cancelled`).

Restore: pre_restore shuts down a server still running on the target (without saving), the files
are laid down, post_restore checks them with redis-check-rdb / redis-check-aof and starts the
server (the `start_command` option).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from shadowvault import cancellation, proc
from shadowvault.errors import CommandError, UsageError, WriterError
from shadowvault.shadow.manifest import Component
from shadowvault.shadow.volumes import Volume
from shadowvault.shadow.writers import app_settings as S
from shadowvault.shadow.writers.appwriter import AppWriter, on_volumes, processes, restored_path, set_aside
from shadowvault.shadow.writers.base import RestoreContext, SnapshotContext

log = logging.getLogger(__name__)

ADDRESS = re.compile(r"redis-server\s+(\S+):(\d+)")


def is_address(instance: str) -> bool:
    """Whether `instance` names a Redis server: `HOST:PORT` or a unix socket's absolute path."""
    if instance.startswith("/"):
        return True
    _, sep, port = instance.rpartition(":")
    return bool(sep) and port.isdigit() and 0 < int(port) < 65536


class RedisWriter(AppWriter):
    """One Redis server, named `host:port` (or a unix socket path).

    Options: password, username, dir (the data directory when the server cannot be asked),
    save_timeout (seconds a BGSAVE may take, default the freeze timeout).
    """

    name = "redis"
    settings = {"username": S.STRING, "dir": S.STRING, "save_timeout": S.NUMBER}
    freeze_can_be_cancelled = True  # a wait for BGSAVE cut short holds nothing; abort restores settings

    def __init__(self, instance: str | None = None, **options: Any) -> None:
        super().__init__(instance or "127.0.0.1:6379", **options)
        if not is_address(str(self.instance)):  # said now, not as int()'s "invalid literal" at identify
            raise UsageError(
                f"redis:{self.instance}: expected HOST:PORT (a port from 1 to 65535) or a unix socket's"
                " absolute path"
            )
        self._client: Any = None
        self._config: dict[str, str] = {}
        self._aof_rewrite: str | None = None
        self._result: dict[str, Any] = {}

    @classmethod
    def discover(cls, volumes: list[Volume]) -> list[RedisWriter]:
        found = []
        for p in processes({"redis-server"}):
            m = ADDRESS.search(" ".join(p.argv))
            if not m or not p.cwd or not on_volumes(p.cwd, volumes):
                continue
            host = "127.0.0.1" if m.group(1) in ("*", "0.0.0.0", "") else m.group(1)
            found.append(cls(f"{host}:{m.group(2)}", dir=p.cwd))
        return found

    # ------------------------------------------------------------ the connection

    def _connect(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        target = str(self.instance)
        kwargs: dict[str, Any] = {
            "password": self.options.get("password"),
            "username": self.options.get("username"),
            "socket_timeout": 30,
            "retry": Retry(NoBackoff(), 0),  # fail at once: the coordinator's policy decides what next
            "socket_connect_timeout": 10,
        }
        if target.startswith("/"):
            client = redis.Redis(unix_socket_path=target, **kwargs)
        else:
            host, _, port = target.rpartition(":")
            client = redis.Redis(host=host or "127.0.0.1", port=int(port), **kwargs)
        try:
            client.ping()
        except redis.RedisError as err:
            raise WriterError(f"cannot reach Redis at {target}: {err}") from err
        return client

    def probe(self) -> None:
        self._connect().close()

    def _call(self, *args: Any) -> Any:
        import redis

        try:
            return self._client.execute_command(*args)
        except redis.RedisError as err:
            raise WriterError(f"Redis refused {' '.join(map(str, args))}: {err}") from err

    def _info(self) -> dict[str, Any]:
        import redis

        try:
            return self._client.info("persistence")
        except redis.RedisError as err:
            raise WriterError(f"Redis refused INFO persistence: {err}") from err

    def _read_config(self) -> dict[str, str]:
        import redis

        config = {}
        for key in ("dir", "dbfilename", "appendonly", "appenddirname", "auto-aof-rewrite-percentage"):
            try:
                reply = self._client.config_get(key)
            except redis.RedisError as err:
                raise WriterError(f"Redis refused CONFIG GET {key}: {err}") from err
            value = reply.get(key)
            if value is not None:
                config[key] = value.decode() if isinstance(value, bytes) else str(value)
        return config

    # ------------------------------------------------------------ metadata

    def _files(self) -> tuple[str, str | None]:
        directory = self._config.get("dir") or self.options.get("dir") or ""
        rdb = os.path.join(directory, self._config.get("dbfilename", "dump.rdb"))
        aof = None
        if self._config.get("appendonly") == "yes":
            aof = os.path.join(directory, self._config.get("appenddirname", "appendonlydir"))
        return rdb, aof

    def identify(self) -> list[Component]:
        if not self._config:
            try:
                self._client = self._client or self._connect()
                self._config = self._read_config()
            except WriterError as err:  # a server that is down is reported when the set needs it
                log.debug("redis %s: %s", self.instance, err)
        rdb, aof = self._files()
        # Unknown directory (server down, none given): no paths rather than relative guesses.
        paths = [p for p in (rdb, aof) if p and os.path.isabs(p)]
        self.components = [
            self.database_component(
                name=f"redis {self.instance}",
                paths=paths,
                reason="the RDB of a BGSAVE started at freeze (its fork is the consistent point)",
                metadata={"dir": os.path.dirname(rdb), "rdb": rdb, "aof": aof},
            )
        ]
        return self.components

    # ------------------------------------------------------------ events

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        self._client = self._client or self._connect()
        self._config = self._read_config()
        self._result = {"redis_version": self._client.info("server").get("redis_version")}
        if self._config.get("appendonly") == "yes":
            self._aof_rewrite = self._config.get("auto-aof-rewrite-percentage", "100")
            self._call("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
            deadline = time.monotonic() + self._save_timeout()
            while self._info().get("aof_rewrite_in_progress"):
                if time.monotonic() > deadline:
                    raise WriterError("an AOF rewrite is still running")
                _pause(0.02)

    def _save_timeout(self) -> float:
        return float(self.options.get("save_timeout") or self.freeze_timeout)

    def freeze(self, ctx: SnapshotContext) -> None:
        self.mark_freeze()
        deadline = time.monotonic() + self._save_timeout()
        before = self._info()
        # A save already running forked before our point: let it end, then start our own.
        while before.get("rdb_bgsave_in_progress"):
            if time.monotonic() > deadline:
                raise WriterError("a background save was already running and did not finish")
            _pause(0.01)
            before = self._info()
        counter = "rdb_saves" if "rdb_saves" in before else None
        started_at = time.time()
        self._call("BGSAVE")
        while True:
            info = self._info()
            done = not info.get("rdb_bgsave_in_progress") and (
                info.get(counter, 0) > before.get(counter, 0)
                if counter
                else info.get("rdb_last_save_time", 0) >= int(started_at)
            )
            if done:
                break
            if time.monotonic() > deadline:
                raise WriterError(f"BGSAVE did not finish within {self._save_timeout():g} s")
            _pause(0.005)
        if info.get("rdb_last_bgsave_status") != "ok":
            raise WriterError(
                f"BGSAVE failed (rdb_last_bgsave_status {info.get('rdb_last_bgsave_status')}); "
                "see the Redis log"
            )
        self._result.update(
            freeze_started=self.freeze_started,
            rdb_saved_at=info.get("rdb_last_save_time"),
            rdb_bgsave_seconds=info.get("rdb_last_bgsave_time_sec"),
        )

    def thaw(self, ctx: SnapshotContext) -> None:
        if self._aof_rewrite is not None and self._client is not None:
            value, self._aof_rewrite = self._aof_rewrite, None
            self._call("CONFIG", "SET", "auto-aof-rewrite-percentage", value)

    def post_snapshot(self, ctx: SnapshotContext) -> None:
        _rdb, aof = self._files()
        if aof:
            self.require_copy_in_hold(ctx, [aof], "the AOF directory changes while Redis runs")
        for component in self.components:
            component.metadata.update(self._result)

    def abort(self, ctx: SnapshotContext) -> None:
        try:
            self.thaw(ctx)
        finally:
            self._close()

    def backup_complete(self, ctx: SnapshotContext, succeeded: bool) -> None:
        self._close()

    def _close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                log.debug("closing the Redis connection failed", exc_info=True)
        self._client = None

    def metadata(self) -> dict[str, Any]:
        meta = self.component_metadata()
        return {k: meta[k] for k in ("redis_version", "rdb", "aof", "rdb_saved_at") if k in meta}

    # ------------------------------------------------------------ restore

    def pre_restore(self, ctx: RestoreContext) -> None:
        if ctx.options.get("stop", ctx.target_root in ("", "/")):
            self._shutdown()
        for component in ctx.components:
            if component.writer == self.name:
                for path in component.paths:
                    set_aside(restored_path(ctx, path), ctx)

    def _shutdown(self) -> None:
        try:
            client = self._connect()
        except WriterError:
            return  # not running: nothing to stop
        log.info("shutting down Redis at %s (without saving) before restoring its files", self.instance)
        try:
            client.execute_command("SHUTDOWN", "NOSAVE")
        except Exception:  # the connection drops when the server exits: that is success
            pass

    def post_restore(self, ctx: RestoreContext) -> None:
        for component in ctx.components:
            if component.writer != self.name:
                continue
            original = component.metadata.get("rdb") or ""
            rdb = restored_path(ctx, original) if os.path.isabs(original) else ""
            if rdb and os.path.exists(rdb):
                check_rdb(rdb)
            aof = component.metadata.get("aof")
            if aof:
                check_aof(restored_path(ctx, aof))
        start = ctx.options.get("start_command")
        if start:
            try:
                proc.run(list(start), timeout=float(ctx.options.get("start_timeout", 300)))
            except CommandError as err:
                raise WriterError(f"the restored Redis did not start: {err}") from err


def _pause(seconds: float) -> None:
    """One poll's pause, after which a cancel of the run (where the event may be cut short) ends the
    wait: the server's work goes on without us, holding nothing of the set."""
    time.sleep(seconds)
    cancellation.check(cancellation.current())


def check_rdb(path: str) -> None:
    """redis-check-rdb must accept the file."""
    try:
        done = proc.run(["redis-check-rdb", path], timeout=600, check=False)
    except CommandError as err:
        raise WriterError(str(err)) from err
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0 or "RDB looks OK" not in text:
        lines = [line for line in text.splitlines() if line.strip()]
        raise WriterError(f"redis-check-rdb rejects {path}: {lines[-1] if lines else done.returncode}")


def check_aof(directory: str) -> None:
    """redis-check-aof must accept the AOF manifest (Redis 7 multi-part AOF)."""
    manifests = (
        [n for n in os.listdir(directory) if n.endswith(".manifest")] if os.path.isdir(directory) else []
    )
    if not manifests:
        raise WriterError(f"no AOF manifest in {directory}")
    done = proc.run(["redis-check-aof", os.path.join(directory, manifests[0])], timeout=600, check=False)
    if done.returncode != 0:
        raise WriterError(
            f"redis-check-aof rejects {directory}: {done.stdout.decode(errors='replace')[-300:]}"
        )
