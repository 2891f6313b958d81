"""The writer interface: the events of the shadow-set sequence, as VSS's CVssWriter has them.

A writer is the agent of one application instance. The coordinator calls every event on every
writer in order; a writer raises WriterError (or any exception) to fail an event, and the
coordinator records the failure in the writer's state and decides to abort or to degrade.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from shadowvault.shadow.manifest import Component, Shadow
from shadowvault.shadow.volumes import Volume

# the watchdog's actions are part of the writer API (Writer.watchdog_actions returns them)
from shadowvault.shadow.watchdog_actions import RunCommand as RunCommand
from shadowvault.shadow.watchdog_actions import SignalProcess as SignalProcess
from shadowvault.shadow.watchdog_actions import ThawFilesystem as ThawFilesystem
from shadowvault.shadow.watchdog_actions import WatchdogAction as WatchdogAction


class FailurePolicy(StrEnum):
    """What a writer's failure does to the shadow set."""

    ABORT = "abort"  # the whole set is aborted
    DEGRADE = "degrade"  # the set goes on; the writer's components are marked crash-consistent


@dataclass
class SnapshotContext:
    """What a writer is told about the shadow set being made."""

    set_id: str
    volumes: list[Volume]
    shadows: list[Shadow] = field(default_factory=list)  # filled after the providers commit
    backup_type: str = "full"  # full | copy (copy: no log truncation or other side effects)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestoreContext:
    """What a writer is told about a restore of its components."""

    components: list[Component]
    target_root: str = "/"  # files are laid down under this root
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the writer wants the user told (how it restored)
    moved_aside: dict[str, str] = field(default_factory=dict)  # what was there -> where it was set aside


class Writer(ABC):
    """The agent of one application instance during shadow sets and restores."""

    name: ClassVar[str]
    """What users call the writer (`sqlite`, `script`, ...): the part of its label before the colon."""

    freezes_filesystems: ClassVar[bool] = False
    """Whether its freeze freezes whole filesystems (fsfreeze). The coordinator freezes such writers
    after the application writers and thaws them first, grades their components `filesystem`, and
    refuses them with a provider whose shadow of a frozen filesystem would deadlock."""

    freeze_can_be_cancelled: ClassVar[bool] = False
    """Whether a cancel of the run may reach its freeze: true only when a freeze cut short holds
    nothing (a database statement interrupted on its server), since abort follows at once. Other
    freezes (a script, a filesystem) run to their end, within the freeze timeout."""

    freeze_timeout: float = 60.0
    """Seconds this writer may take to freeze (VSS's default); lowered to the set's freeze timeout."""

    timeout: float = 0.0
    """Seconds one of this writer's own commands may run (a thaw script), 0 when it runs none. The
    coordinator waits that long (plus a margin) for its thaw, and the watchdog's deadline allows it."""

    failure_policy: FailurePolicy = FailurePolicy.ABORT
    """What its failure does to the set: abort it, or go on with this writer's data crash-consistent."""

    paths: list[str]
    """Data paths a configured writer declares: it is selected automatically for sets on their volumes."""

    volumes: list[str]
    """Mount points a configured writer declares: it is selected automatically for sets of them."""

    def __init__(self, instance: str | None = None, **options: Any) -> None:
        self.instance = instance
        self.options = options
        self.paths = []
        self.volumes = []

    @property
    def label(self) -> str:
        """`name` or `name:instance`, as users select writers."""
        return f"{self.name}:{self.instance}" if self.instance else self.name

    @classmethod
    def discover(cls, volumes: list[Volume]) -> Sequence[Writer]:
        """Instances of this writer whose data lies on `volumes` (automatic selection)."""
        return []

    @classmethod
    def running(cls, volumes: list[Volume]) -> Sequence[Writer]:
        """The instances `writers list` shows: those on `volumes`, unless the writer's instances
        are not data on volumes (a VM: every one that runs)."""
        return cls.discover(volumes)

    @abstractmethod
    def identify(self) -> list[Component]:
        """Describe the application's components (writer metadata)."""

    def prepare_backup(self, ctx: SnapshotContext) -> None:
        """The requester chose what to back up; check the application can take part."""

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        """Slow preparation before the freeze (checkpoint a WAL, start a backup session)."""

    @abstractmethod
    def freeze(self, ctx: SnapshotContext) -> None:
        """Bring the application to a consistent state and hold it there until thaw."""

    @abstractmethod
    def thaw(self, ctx: SnapshotContext) -> None:
        """Let the application run on; must be safe to call when freeze failed half-way."""

    def post_snapshot(self, ctx: SnapshotContext) -> None:
        """The shadows exist (ctx.shadows); record what the copy needs (backup_label, positions)."""

    def backup_complete(self, ctx: SnapshotContext, succeeded: bool) -> None:
        """The requester finished reading the shadows."""

    def abort(self, ctx: SnapshotContext) -> None:
        """The set is abandoned: release everything held; must be safe at any point."""
        self.thaw(ctx)

    def release(self) -> None:
        """This instance takes no part in a set (it was only asked who it is, or another instance of
        the same writer serves): let go of what identify or probe started. Nothing by default."""

    def watchdog_actions(self) -> list[WatchdogAction]:
        """What the watchdog must do to release this writer if the coordinator dies while it holds.

        Locks held by the coordinator's own process (a database session, an fcntl lock) vanish
        with it and need nothing here; a frozen filesystem or a thaw script does.
        """
        return []

    def metadata(self) -> dict[str, Any]:
        """Writer-private data to keep in the manifest for restore."""
        return {}

    def probe(self) -> None:
        """Log in to the application as the first event would, touching nothing: for `writers list`,
        so that wrong credentials or a server that is down show there, not at the next backup.
        WriterError says why it cannot; writers with no session to open have nothing to do."""

    def check_restore(self, ctx: RestoreContext) -> None:
        """Refuse options that cannot work for these components (raise UsageError), touching nothing.

        Asked of every writer of a restore before any of them is stopped, and by a dry run, so that
        a restore that must be refused is refused before anything is laid down.
        """

    def pre_restore(self, ctx: RestoreContext) -> None:
        """Before files are laid down: stop or prepare the application."""

    def post_restore(self, ctx: RestoreContext) -> None:
        """After files are laid down: recover and restart the application, check it."""

    def restore_stopped(self, ctx: RestoreContext) -> None:
        """The restore stopped between pre_restore and post_restore (cancelled, or files not laid
        down): release what the writer holds for it, and leave the application as pre_restore left it."""
