"""The script writer: an administrator's freeze and thaw commands, declared in writers.d.

This is the Linux pre/post-script framework (Azure Backup's): the freeze command quiesces an
application, the thaw command resumes it. Each runs in its own process group with a timeout; a
failure aborts the set or, with on_failure = "degrade", leaves the application's data
crash-consistent. If the coordinator dies while the application is held, the watchdog runs thaw.

The commands run as root, so they are held to writers.d's rules (config.py, trusted_exec.py): only
files nobody but root could change, executed through the descriptor that was checked (a #! script
therefore sees $0 = /proc/self/fd/N), with a clean environment (proc.writer_environment: PATH,
locale, TZ, HOME and the SHADOWVAULT_PHASE/SET_ID/VOLUMES below; none of the requester's secrets).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
from pathlib import Path
from typing import Any

from shadowvault import proc
from shadowvault.errors import CommandError, ConfigError, WriterError
from shadowvault.shadow.manifest import Component
from shadowvault.shadow.writers import config
from shadowvault.shadow.writers.base import (
    FailurePolicy,
    RunCommand,
    SnapshotContext,
    WatchdogAction,
    Writer,
)

log = logging.getLogger(__name__)


class ScriptWriter(Writer):
    """Runs `freeze` at freeze and `thaw` at thaw (and at abort, when freeze had started)."""

    name = "script"

    def __init__(
        self,
        instance: str | None = None,
        *,
        freeze: list[str] | None = None,
        thaw: list[str] | None = None,
        timeout: float = config.DEFAULT_TIMEOUT,
        on_failure: FailurePolicy = FailurePolicy.ABORT,
        paths: list[str] | None = None,
        volumes: list[str] | None = None,
        config_path: Path | None = None,
        **options: Any,
    ) -> None:
        super().__init__(instance, **options)
        self.freeze_argv = list(freeze or [])
        self.thaw_argv = list(thaw or [])
        self.timeout = timeout
        self.failure_policy = on_failure
        self.paths = list(paths or [])
        self.volumes = list(volumes or [])
        self.config_path = config_path
        self._freeze_started = False
        self._running: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._aborted = False

    @classmethod
    def from_config(cls, cfg: config.WriterConfig) -> ScriptWriter:
        data = cfg.data
        freeze, thaw = data.get("freeze"), data.get("thaw")
        if freeze is None and thaw is None:
            raise ConfigError(f"{cfg.path}: a script writer needs `freeze` and/or `thaw` commands")
        for key, argv in (("freeze", freeze), ("thaw", thaw)):
            if argv is not None:
                config.check_command(argv, cfg.path, key)
        policy = data.get("on_failure", "abort")
        if policy not in ("abort", "degrade"):
            raise ConfigError(f'{cfg.path}: on_failure must be "abort" or "degrade", not {policy!r}')
        listed = {}
        for key in ("paths", "volumes"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(p, str) and p[:1] == "/" for p in value):
                raise ConfigError(f"{cfg.path}: {key} must be a list of absolute paths")
            listed[key] = value
        return cls(
            cfg.name,
            freeze=freeze,
            thaw=thaw,
            timeout=config.parse_timeout(data.get("timeout"), cfg.path),
            on_failure=FailurePolicy(policy),
            config_path=cfg.path,
            **listed,
        )

    def identify(self) -> list[Component]:
        return [
            Component(
                name=self.instance or "script",
                writer=self.name,
                instance=self.instance,
                kind="files",
                paths=self.paths,
            )
        ]

    def watchdog_actions(self) -> list[WatchdogAction]:
        if not self.thaw_argv:
            return []
        return [RunCommand(argv=self.thaw_argv, timeout=self.timeout, env={"SHADOWVAULT_PHASE": "thaw"})]

    def freeze(self, ctx: SnapshotContext) -> None:
        with self._lock:
            if self._aborted:
                raise WriterError("aborted before freezing")
            self._freeze_started = True
        if not self.freeze_argv:
            return
        try:
            self._run("freeze", self.freeze_argv, ctx)
        finally:
            if self._aborted and self.thaw_argv:  # abandoned while freezing: undo what may have run
                with contextlib.suppress(WriterError):
                    self._run("thaw", self.thaw_argv, ctx)

    def thaw(self, ctx: SnapshotContext) -> None:
        self._kill_running()
        if self._freeze_started and self.thaw_argv:
            self._freeze_started = False
            self._run("thaw", self.thaw_argv, ctx)
        self._freeze_started = False

    def abort(self, ctx: SnapshotContext) -> None:
        with self._lock:
            self._aborted = True
        self.thaw(ctx)

    def metadata(self) -> dict[str, Any]:
        return {"config": str(self.config_path)} if self.config_path else {}

    def _kill_running(self) -> None:
        with self._lock:
            if self._running is not None and self._running.poll() is None:
                proc.kill_group(self._running)

    def _remember(self, child: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running = child
            if self._aborted and child.args != self.thaw_argv:
                proc.kill_group(child)

    def _run(self, phase: str, argv: list[str], ctx: SnapshotContext) -> None:
        env = proc.writer_environment(
            {
                "SHADOWVAULT_PHASE": phase,
                "SHADOWVAULT_SET_ID": ctx.set_id,
                "SHADOWVAULT_VOLUMES": " ".join(v.mount_point for v in ctx.volumes),
            }
        )
        # Checked again (the files may have changed since they were loaded), and run through the
        # descriptor that was checked: swapping the file after this check changes nothing.
        source = self.config_path or Path(f"script writer {self.instance}")
        program = config.open_command(argv, source, phase, search_path=env["PATH"])
        try:
            done = proc.run_group(
                argv,
                timeout=self.timeout,
                env=env,
                cwd="/",
                on_start=self._remember,
                **program.popen_kwargs(),
            )
        except CommandError as err:
            if "timed out" in str(err):
                raise WriterError(f"{phase} command timed out after {self.timeout:g} s") from err
            raise WriterError(f"{phase} command failed: {err}") from err
        finally:
            program.close()
            with self._lock:
                self._running = None
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            status = (
                f"was killed by signal {-done.returncode}"
                if done.returncode < 0
                else f"exited with status {done.returncode}"
            )
            raise WriterError(f"{phase} command {status}" + (f": {lines[-1]}" if lines else ""))
