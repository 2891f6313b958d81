"""External writers: any executable declared in writers.d that speaks the JSON-lines protocol.

    # /etc/shadowvault/writers.d/myapp.toml
    type = "external"
    command = ["/usr/local/lib/myapp/shadowvault-writer"]
    paths = ["/srv/myapp"]             # the application's data: selects the writer automatically
    on_failure = "abort"               # or "degrade"
    [timeouts]                         # seconds per event (defaults in docs/writers.md)
    freeze = 30
    [options]                          # passed to the writer as `config` in every request
    socket = "/run/myapp.sock"

The executable is started once per shadow set (at its first event), gets one JSON request per
line on stdin and answers each with one JSON line on stdout (docs/writers.md; the codec is
external_protocol.py). It runs in its own session; if it does not answer within the event's
timeout, or exits, the event fails (and the set is aborted unless on_failure = "degrade"). Abort
is sent as a request when the writer is idle, else the writer gets SIGTERM (it must release its
application) and SIGKILL after a grace period. The watchdog also holds a SIGTERM for it, so a
coordinator that dies never leaves it holding. A cancelled run stops waiting for an answer at once:
the writer, caught mid-event, is then terminated by abort the same way.

It is a Writer like the built-in ones: the coordinator runs it on exactly the same code path.
Like a script writer's commands it runs as root, so only a program nobody but root could change is
started, through the descriptor that was checked (trusted_exec.py), with a clean environment:
PATH, locale, TZ, HOME, the [environment] table, SHADOWVAULT_WRITER and SHADOWVAULT_PROTOCOL, and
none of the requester's secrets (proc.writer_environment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from shadowvault import cancellation, child_limits, proc
from shadowvault.errors import ConfigError, JobCancelledError, WriterError
from shadowvault.shadow.manifest import Component, Consistency
from shadowvault.shadow.writers import config as writer_config
from shadowvault.shadow.writers import external_protocol as protocol
from shadowvault.shadow.writers.base import (
    FailurePolicy,
    RestoreContext,
    SignalProcess,
    SnapshotContext,
    WatchdogAction,
    Writer,
)

log = logging.getLogger(__name__)

TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the writer's process group, SIGKILL it past the grace period, reap it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class ExternalWriter(Writer):
    """A writer implemented by a separate executable (a vendor's writer)."""

    name = "external"

    def __init__(
        self,
        instance: str | None = None,
        *,
        command: list[str] | None = None,
        timeouts: dict[str, float] | None = None,
        on_failure: str | FailurePolicy = FailurePolicy.ABORT,
        paths: list[str] | None = None,
        volumes: list[str] | None = None,
        config: dict[str, Any] | None = None,
        environment: dict[str, str] | None = None,
        config_path: Path | None = None,
        **options: Any,
    ) -> None:
        super().__init__(instance, **options)
        if not command:
            raise ConfigError(f"external writer {instance}: `command` is required")
        self.command = list(command)
        self.timeouts = {**protocol.DEFAULT_TIMEOUTS, **(timeouts or {})}
        self.freeze_timeout = self.timeouts["freeze"]
        self.failure_policy = FailurePolicy(on_failure)
        self.paths = list(paths or [])
        self.volumes = list(volumes or [])
        self.config = dict(config or {})
        self.environment = dict(environment or {})
        self.config_path = config_path
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._buffer = b""
        self._stderr: deque[str] = deque(maxlen=20)
        self._busy = threading.Lock()  # one request in flight at a time
        self._broken = False  # a request timed out: the stream can no longer be trusted
        self._components: list[Component] | None = None
        self._metadata: dict[str, Any] = {}
        self._timing: dict[str, float] = {}

    # ------------------------------------------------------------ configuration

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any], path: Path) -> ExternalWriter:
        command = config.get("command")
        if isinstance(command, str):
            command = [command]
        if not isinstance(command, list):
            raise ConfigError(f'{path}: an external writer needs `command` = ["/path/to/writer", ...]')
        writer_config.check_command(command, path, "command")
        timeouts: dict[str, float] = {}
        raw = config.get("timeouts", {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [timeouts] must be a table of event = seconds")
        for event, value in raw.items():
            if event not in protocol.DEFAULT_TIMEOUTS:
                valid = ", ".join(protocol.DEFAULT_TIMEOUTS)
                raise ConfigError(f"{path}: unknown event {event!r} in [timeouts] (valid: {valid})")
            timeouts[event] = writer_config.parse_timeout(value, path)
        if "timeout" in config:  # one number for every event not listed
            default = writer_config.parse_timeout(config["timeout"], path)
            timeouts = {e: timeouts.get(e, default) for e in protocol.DEFAULT_TIMEOUTS}
        policy = config.get("on_failure", "abort")
        if policy not in ("abort", "degrade"):
            raise ConfigError(f'{path}: on_failure must be "abort" or "degrade", not {policy!r}')
        lists = {}
        for key in ("paths", "volumes"):
            value = config.get(key, [])
            if not isinstance(value, list) or not all(isinstance(p, str) and p[:1] == "/" for p in value):
                raise ConfigError(f"{path}: {key} must be a list of absolute paths")
            lists[key] = value
        for key in ("options", "environment"):
            if not isinstance(config.get(key, {}), dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
        return cls(
            name,
            command=command,
            timeouts=timeouts,
            on_failure=policy,
            config=config.get("options", {}),
            environment={str(k): str(v) for k, v in config.get("environment", {}).items()},
            config_path=path,
            **lists,
        )

    # ------------------------------------------------------------ the process

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None and not self._broken:
            return self._process
        self._stop()
        env = proc.writer_environment(
            {
                **self.environment,
                "SHADOWVAULT_WRITER": str(self.instance),
                "SHADOWVAULT_PROTOCOL": str(protocol.PROTOCOL),
            }
        )
        # Checked again (the files may have changed since they were loaded), and started through the
        # descriptor that was checked: swapping the file after this check changes nothing.
        source = self.config_path or Path(f"external writer {self.instance}")
        with writer_config.open_command(self.command, source, "command", search_path=env["PATH"]) as program:
            try:
                process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd="/",
                    env=env,
                    start_new_session=True,
                    preexec_fn=child_limits.preexec(),
                    **program.popen_kwargs(),
                )
            except OSError as err:
                raise WriterError(f"cannot start {self.command[0]}: {err.strerror or err}") from err
        self._process, self._buffer, self._broken = process, b"", False
        self._stderr.clear()
        self._finalizer = weakref.finalize(self, _terminate, process)
        threading.Thread(
            target=self._drain_stderr, args=(process,), daemon=True, name=f"stderr:{self.label}"
        ).start()
        log.debug("external writer %s started as pid %d", self.label, process.pid)
        return process

    def _drain_stderr(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                log.info("writer %s: %s", self.label, line)

    def _stop(self) -> None:
        """Close stdin (a well-behaved writer exits), then SIGTERM/SIGKILL what remains."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=TERM_GRACE)
        except subprocess.TimeoutExpired:
            _terminate(process)
        if self._finalizer is not None:
            self._finalizer.detach()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _exited(self, process: subprocess.Popen[bytes], when: str) -> str:
        """`the writer process exited with status 3 during freeze (stderr: its last line)`."""
        try:
            code = process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return f"the writer process closed its output {when}"
        status = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        time.sleep(0.05)  # let the stderr thread catch the last words
        last = f" (stderr: {self._stderr[-1]})" if self._stderr else ""
        return f"the writer process {status} {when}{last}"

    def _read_line(self, process: subprocess.Popen[bytes], deadline: float, event: str) -> bytes:
        """The writer's answer; a cancel of the run leaves it unanswered (and the writer to abort)."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        cancelled = cancellation.current()
        while b"\n" not in self._buffer:
            if cancelled is not None and cancelled.cancelled:
                self._broken = True  # its answer would come later: abort terminates it
                raise JobCancelledError(cancelled.reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._broken = True
                raise WriterError(f"no answer to {event} within {self.timeouts.get(event, 0):g} s")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self._broken = True
                raise WriterError(self._exited(process, f"during {event}"))
            self._buffer += chunk
            if len(self._buffer) > protocol.MAX_LINE:
                self._broken = True
                raise WriterError(f"answer to {event} is longer than {protocol.MAX_LINE} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _request(self, event: str, payload: dict[str, Any] | None = None, *, blocking: bool = True) -> dict:
        """Send one event, wait for its reply; WriterError when it fails, times out or dies."""
        if not self._busy.acquire(blocking=blocking):
            raise WriterError(f"the writer is still busy with another event; cannot send {event}")
        try:
            process = self._start()
            request = protocol.encode_request(
                event, self.instance, self.config, self.timeouts[event], payload
            )
            assert process.stdin is not None
            try:
                process.stdin.write(request)
                process.stdin.flush()
            except (BrokenPipeError, OSError) as err:
                self._broken = True
                raise WriterError(self._exited(process, f"before {event}")) from err
            line = self._read_line(process, time.monotonic() + self.timeouts[event], event)
        finally:
            self._busy.release()
        try:
            reply = protocol.decode_reply(line, event)
        except WriterError:
            self._broken = True
            raise
        timing = reply.get("timing")
        if isinstance(timing, dict) and isinstance(timing.get("seconds"), int | float):
            self._timing[event] = float(timing["seconds"])
        if isinstance(reply.get("metadata"), dict):
            self._metadata.update(reply["metadata"])
        return protocol.check_state(reply, event)

    # ------------------------------------------------------------ events

    def identify(self) -> list[Component]:
        if self._components is None:
            reply = self._request("identify")
            raw = reply.get("components", [])
            if not isinstance(raw, list):
                raise WriterError("identify must answer with a list of components")
            self._components = [protocol.parse_component(c, self.name, self.instance) for c in raw]
            if not self._components and self.paths:
                self._components = [
                    Component(
                        name=str(self.instance),
                        writer=self.name,
                        instance=self.instance,
                        paths=self.paths,
                        consistency=Consistency.APPLICATION,
                    )
                ]
        return self._components

    def _merge_components(self, reply: dict[str, Any]) -> None:
        if self._components is not None:
            protocol.merge_metadata(self._components, reply)

    def prepare_backup(self, ctx: SnapshotContext) -> None:
        self._merge_components(self._request("prepare_backup", protocol.snapshot_payload(ctx)))

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        self._merge_components(self._request("prepare_snapshot", protocol.snapshot_payload(ctx)))

    def freeze(self, ctx: SnapshotContext) -> None:
        self._merge_components(self._request("freeze", protocol.snapshot_payload(ctx)))

    def thaw(self, ctx: SnapshotContext) -> None:
        self._merge_components(self._request("thaw", protocol.snapshot_payload(ctx)))

    def post_snapshot(self, ctx: SnapshotContext) -> None:
        self._merge_components(self._request("post_snapshot", protocol.snapshot_payload(ctx)))

    def backup_complete(self, ctx: SnapshotContext, succeeded: bool) -> None:
        try:
            self._merge_components(
                self._request("backup_complete", {**protocol.snapshot_payload(ctx), "succeeded": succeeded})
            )
        finally:
            self._finish()

    def abort(self, ctx: SnapshotContext) -> None:
        """Ask the writer to release; if it is busy, hung or gone, SIGTERM it (it must release then)."""
        try:
            if self._process is not None and self._process.poll() is None and not self._broken:
                try:
                    self._request("abort", protocol.snapshot_payload(ctx), blocking=False)
                except WriterError as err:
                    log.warning("writer %s: abort: %s; terminating it", self.label, err)
        finally:
            process, self._process = self._process, None
            if process is not None:
                _terminate(process)
                if self._finalizer is not None:
                    self._finalizer.detach()
            self._components = None

    def _finish(self) -> None:
        self._stop()
        self._components = None

    def watchdog_actions(self) -> list[WatchdogAction]:
        pid = self.pid
        return [SignalProcess(pid=pid, signal=signal.SIGTERM)] if pid else []

    def metadata(self) -> dict[str, Any]:
        return {**self._metadata, "timing": dict(self._timing), "command": self.command[0]}

    # ------------------------------------------------------------ restore

    def _restore_payload(self, ctx: RestoreContext) -> dict[str, Any]:
        return protocol.restore_payload(ctx, self.name, self.instance)

    def pre_restore(self, ctx: RestoreContext) -> None:
        try:
            self._request("pre_restore", self._restore_payload(ctx))
        except WriterError:
            self._finish()
            raise

    def post_restore(self, ctx: RestoreContext) -> None:
        try:
            self._request("post_restore", self._restore_payload(ctx))
        finally:
            self._finish()

    def restore_stopped(self, ctx: RestoreContext) -> None:
        self._finish()  # its input closed, the writer exits: no event, its application left alone
