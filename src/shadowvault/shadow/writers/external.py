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
external_protocol.py, the process external_process.py, the entry's checks external_config.py).
It runs in its own session; if it does not answer within the event's timeout, or exits, the event
fails (and the set is aborted unless on_failure = "degrade"). Abort is sent as a request when the
writer is idle, else the writer gets SIGTERM (it must release its application) and SIGKILL after a
grace period. The watchdog also holds a SIGTERM for it, so a coordinator that dies never leaves it
holding. A cancelled run stops waiting for an answer at once:
the writer, caught mid-event, is then terminated by abort the same way.

It is a Writer like the built-in ones: the coordinator runs it on exactly the same code path.
Like a script writer's commands it runs as root, so only a program nobody but root could change is
started, through the descriptor that was checked (trusted_exec.py), with a clean environment:
PATH, locale, TZ, HOME, the [environment] table, SHADOWVAULT_WRITER and SHADOWVAULT_PROTOCOL, and
none of the requester's secrets (proc.writer_environment).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

from shadowvault.errors import ConfigError, WriterError
from shadowvault.shadow.manifest import Component, Consistency
from shadowvault.shadow.writers import external_protocol as protocol
from shadowvault.shadow.writers.base import (
    FailurePolicy,
    RestoreContext,
    SignalProcess,
    SnapshotContext,
    WatchdogAction,
    Writer,
)
from shadowvault.shadow.writers.external_config import writer_arguments
from shadowvault.shadow.writers.external_process import WriterProcess

log = logging.getLogger(__name__)


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
        self._process = WriterProcess(
            self.label,
            self.command,
            {
                **self.environment,
                "SHADOWVAULT_WRITER": str(self.instance),
                "SHADOWVAULT_PROTOCOL": str(protocol.PROTOCOL),
            },
            config_path or Path(f"external writer {self.instance}"),
        )
        self._components: list[Component] | None = None
        self._metadata: dict[str, Any] = {}
        self._timing: dict[str, float] = {}

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any], path: Path) -> ExternalWriter:
        return cls(name, **writer_arguments(config, path))

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _request(self, event: str, payload: dict[str, Any] | None = None, *, blocking: bool = True) -> dict:
        """Send one event, wait for its reply; WriterError when it fails, times out or dies."""
        request = protocol.encode_request(event, self.instance, self.config, self.timeouts[event], payload)
        line = self._process.exchange(event, request, self.timeouts[event], blocking=blocking)
        try:
            reply = protocol.decode_reply(line, event)
        except WriterError:
            self._process.broken = True
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
            if self._process.answering:
                try:
                    self._request("abort", protocol.snapshot_payload(ctx), blocking=False)
                except WriterError as err:
                    log.warning("writer %s: abort: %s; terminating it", self.label, err)
        finally:
            self._process.kill()
            self._components = None

    def release(self) -> None:
        self._finish()  # the process identify started: its input closed, it exits

    def _finish(self) -> None:
        self._process.stop()
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
