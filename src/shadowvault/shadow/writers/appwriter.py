"""What the application writers (PostgreSQL, MariaDB, Redis, slapd) share.

Finding running servers in /proc, deciding whether an instance's files lie on the volumes of a
shadow set, building a writers.d-declared instance, grading a component's consistency from the
shadows that were taken, and reading the restored copy's paths.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from shadowvault.errors import ConfigError, NotFoundError, WriterError
from shadowvault.process_table import ProcessInfo as ProcessInfo  # re-exported for the writers
from shadowvault.process_table import option_value as option_value
from shadowvault.process_table import processes as processes
from shadowvault.shadow.manifest import Component, Consistency, RestoreMethod, Shadow
from shadowvault.shadow.volumes import Volume, list_volumes, volume_of
from shadowvault.shadow.writers.app_settings import check_settings
from shadowvault.shadow.writers.base import FailurePolicy, RestoreContext, SnapshotContext, Writer
from shadowvault.shadow.writers.set_aside import set_aside as set_aside  # re-exported for the writers

log = logging.getLogger(__name__)


def on_volumes(path: str, volumes: list[Volume]) -> bool:
    """True when the filesystem holding `path` is one of `volumes`."""
    try:
        holder = volume_of(path, list_volumes(with_uuid=False))
    except NotFoundError:
        return False
    return holder.mount_point in {v.mount_point for v in volumes}


def shadows_for(paths: list[str], shadows: list[Shadow]) -> list[Shadow] | None:
    """The shadows that hold `paths`, or None when some path lies outside every shadow."""
    if not paths:
        return []
    mounts = list_volumes(with_uuid=False)
    by_volume = {s.volume: s for s in shadows}
    held = []
    for path in paths:
        try:
            volume = volume_of(path, mounts).mount_point
        except NotFoundError:
            return None
        if volume not in by_volume:
            return None
        held.append(by_volume[volume])
    return held


def restored_path(ctx: RestoreContext, original: str) -> str:
    """Where `original` was laid down by a restore (under ctx.target_root)."""
    root = ctx.target_root or "/"
    if root == "/":
        return original
    return os.path.join(root, original.lstrip("/"))


def parse_policy(value: Any, where: str) -> FailurePolicy:
    try:
        return FailurePolicy(value)
    except ValueError:
        raise ConfigError(f'{where}: on_failure must be "abort" or "degrade", not {value!r}') from None


class AppWriter(Writer):
    """A writer for one server instance; subclasses implement the events.

    Options common to all: `on_failure` ("abort" | "degrade") and `freeze_timeout` (seconds).
    Instance settings (ports, sockets, users, passwords) are plain keyword options, so the same
    instance can be declared with `--writer name:instance` or in a writers.d file.
    """

    def __init__(self, instance: str | None = None, **options: Any) -> None:
        policy = options.pop("on_failure", None)
        timeout = options.pop("freeze_timeout", None)
        super().__init__(instance, **options)
        if policy is not None:
            self.failure_policy = parse_policy(policy, self.label)
        if timeout is not None:
            self.freeze_timeout = float(timeout)
        self.components: list[Component] = []
        self.freeze_started: float | None = None

    settings: ClassVar[dict[str, str]] = {}
    """The writers.d settings of this writer besides instance, on_failure, freeze_timeout and
    password, with their kind (app_settings.STRING, INTEGER, NUMBER, FLAG)."""

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any], path: Path) -> AppWriter:
        """An instance declared in writers.d: `type = "<writer>"`, `instance = ...` and its options."""
        check_settings(cls.name, cls.settings, config, path)
        options = {k: v for k, v in config.items() if k not in ("type", "name")}
        instance = options.pop("instance", None)
        if instance is not None and not isinstance(instance, str):
            raise ConfigError(f"{path}: instance must be a string")
        if "on_failure" in options:
            parse_policy(options["on_failure"], str(path))
        return cls(instance, **options)

    def database_component(
        self, name: str, paths: list[str], reason: str, metadata: dict[str, Any]
    ) -> Component:
        """A server's database as one component: stopped, replaced and restarted on restore."""
        return Component(
            name=name,
            writer=self.name,
            instance=self.instance,
            kind="database",
            paths=paths,
            restore_method=RestoreMethod.STOP_RESTORE_START,
            consistency=Consistency.APPLICATION,
            reason=reason,
            metadata=metadata,
        )

    def mark_freeze(self) -> None:
        """Remember when the freeze began: transactions acknowledged before it are in the copy."""
        self.freeze_started = time.time()

    def grade(self, ctx: SnapshotContext, paths: list[str]) -> tuple[bool, str]:
        """Whether one atomic shadow holds all of `paths` (crash-consistent by itself), and why."""
        shadows = shadows_for(paths, ctx.shadows)
        if shadows is None:
            return False, "some of its files lie outside the shadow set"
        if len({s.volume for s in shadows}) > 1:
            return False, "its files span several volumes, whose shadows are not taken at one instant"
        if not all(s.atomic for s in shadows):
            return False, "the provider's image is not atomic (files copied one after another)"
        return True, "one atomic shadow holds all its files"

    def require_copy_in_hold(self, ctx: SnapshotContext, paths: list[str], why: str) -> None:
        """Fail unless every file was copied while this writer held: `live` reads after the thaw."""
        shadows = shadows_for(paths, ctx.shadows)
        if shadows is None:
            raise WriterError("some of its files lie outside the shadow set")
        live = sorted({s.volume for s in shadows if s.provider == "live"})
        if live:
            raise WriterError(f"the live provider on {', '.join(live)} reads the files after the thaw; {why}")

    def set_consistency(self, consistency: Consistency, reason: str) -> None:
        for component in self.components:
            component.consistency = consistency
            component.reason = reason

    def component_metadata(self) -> dict[str, Any]:
        return self.components[0].metadata if self.components else {}
