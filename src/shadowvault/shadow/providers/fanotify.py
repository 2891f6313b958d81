"""The fanotify provider: a copy-on-write shadow made in user space, for ext4 and others (Linux >= 6.14).

No kernel module, no snapshot support in the filesystem: at commit, while the volume is frozen, a
listener process (fanotify_listener; started, awaited and stopped through fanotify_process) indexes
the volume, pins every file open, and marks the whole filesystem for fanotify pre-content events;
from the thaw on, it copies each range's old content aside before its first change. The shadow is
read through a read-only FUSE view the listener serves at `<state dir>/fanotify/<set id>-<index>`:
names and metadata from the index, data from the saved ranges or the pinned live file. The
listener lives until the shadow is deleted; if it dies, the view fails every access (ENOTCONN), and
a failed copy makes it fail with EIO: never silently wrong.

It needs the filesystem frozen at the instant (FreezePolicy.NEEDS): the index is finished inside
the freeze, which is what makes it one point in time across files (hence `atomic`). With `--writer
fsfreeze` that is the set's freeze; without, the listener freezes the volume itself for its index
(fanotify_freeze), and this provider thaws it if the listener dies or the commit is cancelled (the
set is then aborted anyway).

It writes nothing to the shadowed volume: the view, the saved ranges and the listener's log live in
the state directory (whose filesystem is never frozen), so the saved ranges take space there.

Limits of this first version (said in the shadow's notes where they apply): files open for writing
or mapped shared at the instant are copied whole during the commit (fanotify cannot see writes
through descriptors opened before its mark); a write costs a copy of its 64 KiB chunks the first
time, a truncation or an access we cannot classify a copy of the whole file; every file of the
volume is held open by the listener, so the volume may hold at most as many files as it may open.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time

from shadowvault import paths
from shadowvault.display import counted
from shadowvault.errors import PermissionDeniedError, ProviderError, ShadowUncheckedError, UnsupportedError
from shadowvault.shadow.freeze_rules import check_may_freeze
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers import fanotify_sys
from shadowvault.shadow.providers.base import (
    IMAGE_NAME,
    WHOLE_VOLUMES,
    FoundImage,
    FreezePolicy,
    Provider,
    ReadScope,
    image_name,
)
from shadowvault.shadow.providers.fanotify_access import architecture_supported
from shadowvault.shadow.providers.fanotify_listener import INVALID_SUFFIX
from shadowvault.shadow.providers.fanotify_process import listener_alive, start_listener, stop_listener
from shadowvault.shadow.providers.own_images import foreign, own_image_path
from shadowvault.shadow.volumes import Volume

MIN_KERNEL = (6, 14)
TESTED_FSTYPES = ("ext4", "ext3", "ext2", "xfs", "btrfs")  # pre-content marks: refused on tmpfs, overlay


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running kernel."""
    numbers = (release or os.uname().release).split("-", 1)[0].split(".")
    try:
        return int(numbers[0]), int(numbers[1])
    except (IndexError, ValueError):
        return 0, 0


def base_dir() -> str:
    """Where the views, saved ranges, records and logs of fanotify shadows live."""
    return os.path.abspath(paths.state_dir() / "fanotify")  # plain and absolute, as delete checks


def _is_mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class FanotifyProvider(Provider):
    """A user-space copy-on-write shadow, kept by a listener process, read through a FUSE view."""

    name = "fanotify"
    atomic = True
    freeze_policy = FreezePolicy.NEEDS
    priority = 15  # below btrfs and reflink (which need no listener), above live

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def unsupported_reason(self, volume: Volume) -> str | None:
        prefix = f"provider fanotify cannot shadow {volume.mount_point}"
        if kernel_version() < MIN_KERNEL:
            return f"{prefix}: this kernel ({os.uname().release}) has no fanotify pre-content events (6.14+)"
        if not architecture_supported():
            return f"{prefix}: its system call table is known for x86_64 only"
        if volume.fstype not in TESTED_FSTYPES:
            return f"{prefix}: it is {volume.fstype}; pre-content events work on {', '.join(TESTED_FSTYPES)}"
        if volume.read_only:
            return f"{prefix}: it is mounted read-only (nothing changes it; use live)"
        if not os.path.exists("/dev/fuse"):
            return f"{prefix}: /dev/fuse is missing (the shadow is read through FUSE)"
        try:
            check_may_freeze(volume)
        except Exception as err:
            return f"{prefix}: its instant needs the volume frozen ({err})"
        return None

    # -- places -----------------------------------------------------------------------------------

    def _shadow_at(self, volume: Volume, name: str) -> Shadow:
        base = base_dir()
        view = os.path.join(base, name)
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=view,
            atomic=True,
            provider_data={
                "view": view,
                "store": view + ".cow",
                "record": view + ".json",
                "log": view + ".log",
            },
        )

    def planned(self, volume: Volume, set_id: str, index: int) -> Shadow:
        return self._shadow_at(volume, image_name(set_id, index))

    # -- commit -----------------------------------------------------------------------------------

    def create(self, volume: Volume, set_id: str, index: int, scope: ReadScope = WHOLE_VOLUMES) -> Shadow:
        reason = self.unsupported_reason(volume)
        if reason:
            raise UnsupportedError(reason)
        if os.geteuid() != 0:
            raise PermissionDeniedError("provider fanotify needs root (fanotify pre-content events, FUSE)")
        shadow = self._shadow_at(volume, image_name(set_id, index))
        data = shadow.provider_data
        os.makedirs(base_dir(), mode=0o700, exist_ok=True)
        if os.path.lexists(data["view"]) or os.path.lexists(data["record"]):
            raise ProviderError(f"cannot create {data['view']}: it exists already")
        os.mkdir(data["view"], 0o700)
        try:
            report = start_listener(volume, shadow, self._cancelled)
        except BaseException:
            self.delete(shadow)
            raise
        shadow.created = time.time()
        shadow.frozen = True  # by the set's fsfreeze, or by the listener for its index
        shadow.provider_data.update(
            files=report.get("files", 0),
            copied_at_commit=report.get("unguarded", 0),
            bytes_copied_at_commit=report.get("bytes_saved", 0),
            commit_timings=report.get("timings", {}),
        )
        shadow.notes = self._notes(volume, report)
        return shadow

    @staticmethod
    def _notes(volume: Volume, report: dict) -> list[str]:
        notes = []
        if report.get("skipped_mounts"):
            notes.append(
                f"other filesystems mounted below {volume.mount_point} are not in its shadow: "
                + ", ".join(report["skipped_mounts"])
            )
        if report.get("unguarded"):
            notes.append(
                f"{counted(report['unguarded'], 'file')} open for writing at the instant: copied whole at"
                f" commit ({report.get('bytes_saved', 0)} bytes)"
            )
        notes.extend(report.get("problems", []))
        return notes

    def problem(self, shadow: Shadow) -> str | None:
        """Why the shadow no longer holds its instant: its listener ended, or a copy aside failed."""
        view = shadow.provider_data.get("view") or shadow.path
        try:
            with open(view + INVALID_SUFFIX) as f:
                return f"the fanotify shadow of {shadow.volume} is invalid: {f.read().strip()}"
        except FileNotFoundError:
            pass
        except OSError as err:
            raise ShadowUncheckedError(
                f"the fanotify shadow of {shadow.volume} cannot be checked: {err.strerror}"
            ) from err
        if not listener_alive(shadow):
            return (
                f"the fanotify listener of {shadow.volume} has stopped: its shadow no longer holds "
                "the point in time"
            )
        return None

    # -- delete and reap ----------------------------------------------------------------------------

    def delete(self, shadow: Shadow) -> None:
        """Stop the listener (it unmounts the view and removes its mark), then remove what is left."""
        view, record = self._own_view(shadow)
        stop_listener(record)
        if _is_mounted(view):
            try:
                fanotify_sys.umount(view)
            except OSError as err:
                raise ProviderError(f"cannot unmount the fanotify view {view}: {err.strerror}") from err
        shutil.rmtree(view + ".cow", ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(view)
        for leftover in (record, view + ".log", view + INVALID_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)

    @staticmethod
    def _own_view(shadow: Shadow) -> tuple[str, str]:
        """The view and listener record of the shadow, when its record names ours: a view
        `<state dir>/fanotify/<set id>-<index>` and its `.cow`, `.json`, `.log` beside it;
        ForeignImageError else (a record naming a mount or a directory of the user's)."""
        data = shadow.provider_data
        view = own_image_path(shadow, data.get("view") or shadow.path, base_dir(), (IMAGE_NAME,))
        for key, suffix in (("store", ".cow"), ("record", ".json"), ("log", ".log")):
            if data.get(key, view + suffix) != view + suffix:
                raise foreign(shadow, data[key])
        return view, view + ".json"

    def found_images(self, volume: Volume) -> list[FoundImage]:
        """Views of this volume in `<state dir>/fanotify`, by their records."""
        base = base_dir()
        try:
            names = os.listdir(base)
        except OSError:
            return []
        found = []
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            match = IMAGE_NAME.match(stem)
            if not dot or suffix != "json" or match is None:
                continue
            try:
                with open(os.path.join(base, name)) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            if info.get("volume") == volume.mount_point:
                found.append(FoundImage(match["set_id"], self._shadow_at(volume, stem)))
        return found
