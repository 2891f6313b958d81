"""The documents of a shadow set: writer metadata (components) and the shadow-set manifest.

These are the Linux counterparts of VSS's Writer Metadata Document and Backup Components Document.
They are stored in the state directory and, by `backup`, with every snapshot in the repository.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from shadowvault.typed_decoding import decode_json


class Consistency(StrEnum):
    """How trustworthy a component's copy is, best first."""

    APPLICATION = "application"  # a writer brought the application to a consistent state for the shadow
    FILESYSTEM = "filesystem"  # the filesystem was quiesced (fsfreeze) or the image is atomic, no writer
    CRASH = "crash"  # as if the power had failed at the shadow's instant: the application must recover
    NONE = "none"  # no point in time at all (files read live, one after another)


class WriterState(StrEnum):
    """A writer's state, with the meaning of VSS_WRITER_STATE."""

    STABLE = "stable"
    WAITING_FOR_FREEZE = "waiting_for_freeze"
    FROZEN = "frozen"
    WAITING_FOR_POST_SNAPSHOT = "waiting_for_post_snapshot"
    WAITING_FOR_BACKUP_COMPLETE = "waiting_for_backup_complete"
    FAILED_AT_IDENTIFY = "failed_at_identify"
    FAILED_AT_PREPARE_BACKUP = "failed_at_prepare_backup"
    FAILED_AT_PREPARE_SNAPSHOT = "failed_at_prepare_snapshot"
    FAILED_AT_FREEZE = "failed_at_freeze"
    FAILED_AT_THAW = "failed_at_thaw"
    FAILED_AT_POST_SNAPSHOT = "failed_at_post_snapshot"
    FAILED_AT_BACKUP_COMPLETE = "failed_at_backup_complete"
    FAILED_AT_PRE_RESTORE = "failed_at_pre_restore"
    FAILED_AT_POST_RESTORE = "failed_at_post_restore"
    TIMED_OUT = "timed_out"
    ABORTED = "aborted"

    @property
    def failed(self) -> bool:
        return self.value.startswith("failed_") or self in (WriterState.TIMED_OUT, WriterState.ABORTED)


class RestoreMethod(StrEnum):
    """How a component is put back (VSS_RESTOREMETHOD_ENUM, for Linux services)."""

    RESTORE_IF_NOT_THERE = "restore_if_not_there"
    RESTORE_IF_CAN_REPLACE = "restore_if_can_replace"
    STOP_RESTORE_START = "stop_restore_start"
    RESTORE_TO_ALTERNATE_LOCATION = "restore_to_alternate_location"
    CUSTOM = "custom"


class Component(msgspec.Struct, kw_only=True):
    """One unit of an application's data that a writer describes: files, a database, its logs."""

    name: str
    writer: str
    instance: str | None = None
    kind: str = "files"  # files | database | log | directory | config
    paths: list[str] = []  # absolute paths on the live system that make up the component
    selectable: bool = True  # may be backed up or restored on its own
    restore_method: RestoreMethod = RestoreMethod.RESTORE_IF_CAN_REPLACE
    consistency: Consistency = Consistency.CRASH
    reason: str = ""  # why the consistency is what it is, in words for the user
    metadata: dict[str, Any] = {}  # writer-private data kept for restore (backup_label, binlog position, ...)


class WriterReport(msgspec.Struct, kw_only=True):
    """What one writer did during a shadow set: its final state, failure, components and timings."""

    name: str
    instance: str | None = None
    state: WriterState = WriterState.STABLE
    failure: str | None = None  # a sentence naming the phase and the cause
    components: list[Component] = []
    timings: dict[str, float] = {}  # event name -> seconds spent in that event
    metadata: dict[str, Any] = {}


class Shadow(msgspec.Struct, kw_only=True):
    """The point-in-time image of one volume, and where a requester reads it."""

    volume: str  # the volume's mount point
    fs_uuid: str | None = None
    fstype: str = ""
    provider: str = ""
    path: str = ""  # where the image's root can be read (equals `volume` for the live provider)
    atomic: bool = True  # every file of the volume taken at one instant
    frozen: bool = False  # the filesystem was frozen (fsfreeze) while the image was taken
    created: float = 0.0  # time.time() of the commit
    provider_data: dict[str, Any] = {}  # what the provider needs to delete it (subvolume, directory)
    notes: list[str] = []  # what the image leaves out or cannot promise (nested subvolumes, skipped files)
    invalid: str = ""  # why the image no longer holds its point in time (an LVM snapshot that overflowed)


class ShadowSetManifest(msgspec.Struct, kw_only=True):
    """A shadow set: the shadows of several volumes taken together, and what every writer did.

    Stored in the state directory while the set exists and with every backup made from it.
    """

    id: str
    created: float
    host: str
    state: str = "creating"  # creating | created | aborted | released
    persistent: bool = False
    requester_pid: int | None = None  # the set is released automatically when this process ends
    requester_uid: int | None = None  # who asked the daemon for it (a user who is not root sees only theirs)
    client_pid: int | None = None  # the daemon's caller: its connection holds a set that is not persistent
    provider: str = ""  # the provider asked for (auto, btrfs, reflink, live)
    shadows: list[Shadow] = []
    writers: list[WriterReport] = []
    phases: dict[str, float] = {}  # phase name -> seconds
    freeze_window: float | None = None  # seconds from the first freeze to the last thaw
    frozen_at: float | None = None  # time.time() when the first writer was asked to freeze
    notes: list[str] = []  # plain statements for the user ("files outside writers are not consistent")

    def components(self) -> list[Component]:
        """Every component of every writer."""
        return [component for writer in self.writers for component in writer.components]


def encode(manifest: ShadowSetManifest) -> bytes:
    """The manifest as pretty JSON bytes, as stored on disk."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2)


def decode(data: bytes) -> ShadowSetManifest:
    """Parse a stored manifest."""
    return decode_json(data, ShadowSetManifest)
