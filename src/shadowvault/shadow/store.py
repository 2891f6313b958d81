"""The shadow-set store: one manifest per set in the state directory, and the sets' lifecycle.

Layout under `<state dir>/sets/`:

    <id>.json       the set's ShadowSetManifest, written atomically (temp file, fsync, rename)
    <id>.exposed    JSON list of the set's exposures (read-only bind mounts), when it has any
    <id>.intent     JSON list of the shadows the set's providers are about to make (see below)
    .volumes        JSON list of the volumes this store has made shadows on (mount point, fs UUID)
    .lock           flock()ed while a record is written or a set is released, so that several
                    processes (create, delete, reap) can work at once

Limits like VSS's: at most `max_shadows_per_volume()` shadows per volume (oldest deleted first),
and sets that are not persistent are released once their requester process has ended (`reap`).

Nothing a killed requester leaves stays unseen. The coordinator records a set's intent (the path
each provider will create, before the freeze) and the record lists the shadows once they are made,
so releasing a set deletes the made and the half-made alike. And `reap` also deletes orphan images:
images in a provider's own place (`<mount>/.shadowvault/<set id>-<index>`) on a volume this store
uses, whose set no record or intent of this store knows: a record lost or removed by hand, or a
commit that ended after its aborted set was released, as its process exited. A live set's image is
never taken for one: it is recorded before it is made, and the lock held while reaping keeps a
creator from recording one meanwhile. One store per volume: a second state directory making
shadows on the same volume would have its images taken for orphans.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import msgspec

from shadowvault import paths
from shadowvault.errors import (
    ConfigError,
    NotFoundError,
    PartialFailure,
    PermissionDeniedError,
    ShadowError,
    ShadowvaultError,
    UsageError,
)
from shadowvault.fsutil import atomic_write
from shadowvault.shadow import expose as mounts
from shadowvault.shadow.manifest import Shadow, ShadowSetManifest, decode, encode
from shadowvault.shadow.providers.base import Provider
from shadowvault.shadow.providers.hidden_dir import ShadowUnreachableError, filesystem_uuid
from shadowvault.shadow.providers.registry import all_providers, get_provider
from shadowvault.shadow.volumes import Volume, list_volumes

log = logging.getLogger(__name__)

DEFAULT_MAX_SHADOWS_PER_VOLUME = 64
CONFIG_FILE = "shadowvault.toml"
RECORD_SUFFIX = ".json"
EXPOSED_SUFFIX = ".exposed"
INTENT_SUFFIX = ".intent"
VOLUMES_FILE = ".volumes"
SET_ID_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
UNFINISHED_STATES = ("creating", "aborted")


class Exposure(msgspec.Struct, kw_only=True):
    """One shadow of a set mounted read-only at `at`."""

    set_id: str
    volume: str
    index: int
    source: str  # the shadow's path that is mounted
    at: str
    created_dir: bool = False  # `at` was made by expose and is removed by unexpose
    created: float = 0.0


class KnownVolume(msgspec.Struct, kw_only=True, frozen=True):
    """A volume this store has made shadows on: where orphan reaping looks for images."""

    mount_point: str
    fs_uuid: str | None = None


def max_shadows_per_volume() -> int:
    """`max_shadows_per_volume` from `<config dir>/shadowvault.toml`, default 64."""
    path = paths.config_dir() / CONFIG_FILE
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except FileNotFoundError:
        return DEFAULT_MAX_SHADOWS_PER_VOLUME
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: {err}") from err
    value = config.get("max_shadows_per_volume", DEFAULT_MAX_SHADOWS_PER_VOLUME)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{path}: max_shadows_per_volume must be a whole number >= 1, not {value!r}")
    return value


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def process_alive(pid: int | None, since: float | None = None) -> bool:
    """Whether process `pid` runs (not a zombie) and, if `since` is given, started no later than that.

    The start-time check catches a PID reused by a new process after the requester ended.
    """
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if fields[0] in ("Z", "X"):
        return False
    if since is not None:
        started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if started > since + 2.0:
            return False
    return True


class _ProcessLock:
    """An flock on a file, re-entrant within this process (flock itself would deadlock on re-entry)."""

    def __init__(self, path: Path):
        self.path = path
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    def __enter__(self) -> None:
        self.rlock.acquire()
        try:
            if self.depth == 0:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except PermissionError as err:
                    raise PermissionDeniedError(
                        f"cannot lock {self.path}: permission denied (shadow sets are managed by root)"
                    ) from err
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self.fd = fd
            self.depth += 1
        except BaseException:
            self.rlock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0 and self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.rlock.release()


_locks: dict[str, _ProcessLock] = {}
_locks_guard = threading.Lock()


def _forget_locks_in_child() -> None:
    """After fork: the child must not keep the parent's flock alive (a watchdog child would)."""
    global _locks_guard
    _locks_guard = threading.Lock()
    for lock in _locks.values():
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
        lock.fd, lock.depth, lock.rlock = None, 0, threading.RLock()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _lock_for(path: Path) -> _ProcessLock:
    with _locks_guard:
        key = str(path)
        if key not in _locks:
            _locks[key] = _ProcessLock(path)
        return _locks[key]


class ShadowStore:
    """Shadow-set records in `root` (default `<state dir>/sets`), and what releasing a set means."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else paths.state_dir() / "sets"

    # -- records -------------------------------------------------------------------------------

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except PermissionError as err:
            raise PermissionDeniedError(
                f"cannot create the state directory {self.root}: {err.strerror}"
            ) from err

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock: records do not change under the caller (re-entrant in a process)."""
        self._ensure_root()
        with _lock_for(self.root / ".lock"):
            yield

    def _record(self, set_id: str) -> Path:
        return self.root / f"{set_id}{RECORD_SUFFIX}"

    def _exposed_record(self, set_id: str) -> Path:
        return self.root / f"{set_id}{EXPOSED_SUFFIX}"

    def _intent_record(self, set_id: str) -> Path:
        return self.root / f"{set_id}{INTENT_SUFFIX}"

    def new_id(self) -> str:
        """A short, unique id that sorts by creation time: `20261125T140312-3f9a1c` (UTC)."""
        self._ensure_root()
        while True:
            set_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
            if not self._record(set_id).exists():
                return set_id

    def save(self, manifest: ShadowSetManifest) -> None:
        """Write the set's record atomically (a reader sees the old or the new record, never half)."""
        if not SET_ID_PATTERN.match(manifest.id):
            raise UsageError(f"invalid shadow set id {manifest.id!r}")
        with self.locked():
            atomic_write(self._record(manifest.id), encode(manifest), mode=0o600)
            self._remember_volumes(manifest.shadows)

    # -- intents: shadows about to be made -------------------------------------------------------

    def record_intent(self, set_id: str, shadows: Iterable[Shadow]) -> None:
        """Durably note the shadows set `set_id` is about to make, before any provider makes them.

        Call it after the set's record is saved and before the providers' commit: if the requester
        dies from then on, releasing the set (by `reap`) deletes these paths whether they were made,
        half made or not made at all. `clear_intent` drops the note once the record lists the shadows.
        """
        if not SET_ID_PATTERN.match(set_id):
            raise UsageError(f"invalid shadow set id {set_id!r}")
        planned = list(shadows)
        with self.locked():
            if not self._record(set_id).exists():
                raise NotFoundError(f"no shadow set {set_id}: save its record before its intent")
            atomic_write(self._intent_record(set_id), msgspec.json.encode(planned), mode=0o600)
            self._remember_volumes(planned)

    def intent(self, set_id: str) -> list[Shadow]:
        """The shadows set `set_id` said it was about to make ([] when it said nothing)."""
        try:
            data = self._intent_record(set_id).read_bytes()
        except FileNotFoundError:
            return []
        try:
            return msgspec.json.decode(data, type=list[Shadow])
        except msgspec.DecodeError as err:
            raise ShadowError(f"the intent record of shadow set {set_id} is damaged: {err}") from err

    def clear_intent(self, set_id: str) -> None:
        """The set's record now lists every shadow it made: the intent is no longer needed."""
        with self.locked():
            self._intent_record(set_id).unlink(missing_ok=True)

    def _intent_ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except (FileNotFoundError, PermissionError):
            return []
        suffix = len(INTENT_SUFFIX)
        return [n[:-suffix] for n in names if n.endswith(INTENT_SUFFIX) and not n.startswith(".")]

    # -- the volumes this store uses ------------------------------------------------------------

    def _volumes_file(self) -> Path:
        return self.root / VOLUMES_FILE

    def known_volumes(self) -> list[KnownVolume]:
        """The volumes this store has made (or meant to make) shadows on."""
        try:
            return msgspec.json.decode(self._volumes_file().read_bytes(), type=list[KnownVolume])
        except FileNotFoundError:
            return []
        except msgspec.DecodeError as err:
            log.warning("%s is damaged, started afresh: %s", self._volumes_file(), err)
            return []

    def _write_volumes(self, volumes: list[KnownVolume]) -> None:
        atomic_write(self._volumes_file(), msgspec.json.encode(volumes), mode=0o600)

    def _remember_volumes(self, shadows: Iterable[Shadow]) -> None:
        known = {v.mount_point: v for v in self.known_volumes()}
        changed = False
        for shadow in shadows:
            if not shadow.provider or shadow.path == shadow.volume:  # no image (the live provider)
                continue
            old = known.get(shadow.volume)
            if old is None or (shadow.fs_uuid and old.fs_uuid != shadow.fs_uuid):
                known[shadow.volume] = KnownVolume(mount_point=shadow.volume, fs_uuid=shadow.fs_uuid)
                changed = True
        if changed:
            self._write_volumes(list(known.values()))

    def _ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        except PermissionError as err:
            raise PermissionDeniedError(
                f"cannot read the shadow sets in {self.root}: permission denied (they are root's)"
            ) from err
        suffix = len(RECORD_SUFFIX)
        return [n[:-suffix] for n in names if n.endswith(RECORD_SUFFIX) and not n.startswith(".")]

    def _read(self, set_id: str) -> ShadowSetManifest:
        path = self._record(set_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no shadow set {set_id}") from None
        try:
            return decode(data)
        except msgspec.DecodeError as err:
            raise ShadowError(f"the record of shadow set {set_id} ({path}) is damaged: {err}") from err

    def resolve(self, ref: str) -> str:
        """The full id of the set named by `ref` (a full id or a unique prefix of one)."""
        if not ref or not SET_ID_PATTERN.match(ref):
            raise NotFoundError(f"no shadow set {ref}")
        ids = self._ids()
        if ref in ids:
            return ref
        matches = sorted(i for i in ids if i.startswith(ref))
        if not matches:
            raise NotFoundError(f"no shadow set {ref}")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise UsageError(f"shadow set id {ref} is ambiguous: it starts {shown}")
        return matches[0]

    def load(self, ref: str) -> ShadowSetManifest:
        """The set named by a full id or a unique prefix; NotFoundError / UsageError (ambiguous) else."""
        return self._read(self.resolve(ref))

    def list(self) -> list[ShadowSetManifest]:
        """Every set, oldest first; a damaged record is logged and left out."""
        sets = []
        for set_id in self._ids():
            try:
                sets.append(self._read(set_id))
            except NotFoundError:
                continue  # released meanwhile
            except ShadowError as err:
                log.warning("%s", err)
        return sorted(sets, key=lambda m: (m.created, m.id))

    # -- release and limits --------------------------------------------------------------------

    def release(self, set_id: str) -> None:
        """Unexpose and delete every shadow of the set, then its record. Unknown ids are no error.

        If a shadow cannot be deleted, the record is kept with the shadows that remain, so that a
        later release retries them, and the error is raised.
        """
        with self.locked():
            if not self._record(set_id).exists():
                self._exposed_record(set_id).unlink(missing_ok=True)
                self._release_intent(set_id)  # a leftover of a release that was cut short
                return
            manifest = self._read(set_id)
            self.unexpose(set_id=set_id)
            remaining: list[Shadow] = []
            failures: list[ShadowvaultError] = []
            for shadow in manifest.shadows:
                try:
                    self._delete_shadow(shadow)
                except ShadowvaultError as err:
                    remaining.append(shadow)
                    failures.append(err)
            try:
                self._release_intent(set_id, already={s.path for s in manifest.shadows})
            except ShadowvaultError as err:
                failures.append(err)
            if failures:
                manifest.shadows = remaining
                self.save(manifest)
                raise failures[0]
            self._record(set_id).unlink(missing_ok=True)
            log.info("released shadow set %s", set_id)

    def _release_intent(self, set_id: str, already: Collection[str] = ()) -> None:
        """Delete what the set meant to make (made or not), then its intent; keep what failed, and raise.

        A damaged intent is dropped with a warning rather than blocking the release forever: once the
        set's record is gone too, `remove_orphan_images` finds whatever it named.
        """
        try:
            planned = [s for s in self.intent(set_id) if s.path not in already]
        except ShadowError as err:
            log.warning("%s; dropped", err)
            planned = []
        remaining: list[Shadow] = []
        failures: list[ShadowvaultError] = []
        for shadow in planned:
            try:
                self._delete_shadow(shadow)
            except ShadowvaultError as err:
                remaining.append(shadow)
                failures.append(err)
        if remaining:
            atomic_write(self._intent_record(set_id), msgspec.json.encode(remaining), mode=0o600)
            raise failures[0]
        self._intent_record(set_id).unlink(missing_ok=True)

    @staticmethod
    def _delete_shadow(shadow: Shadow) -> None:
        if not shadow.provider:
            return
        try:
            provider = get_provider(shadow.provider)
        except UsageError:
            log.warning("shadow of %s: unknown provider %r, record dropped", shadow.volume, shadow.provider)
            return
        try:
            provider.delete(shadow)
        except ShadowUnreachableError as err:
            log.warning("%s; its image %s stays until the volume is mounted again", err, shadow.path)

    def delete_oldest(self) -> str:
        """Release the oldest set and return its id."""
        with self.locked():
            sets = self.list()
            if not sets:
                raise NotFoundError("there are no shadow sets")
            self.release(sets[0].id)
            return sets[0].id

    def delete_all(self) -> list[str]:
        """Release every set; returns the released ids (PartialFailure if some could not be)."""
        deleted, failed = [], []
        with self.locked():
            for manifest in self.list():
                try:
                    self.release(manifest.id)
                    deleted.append(manifest.id)
                except ShadowvaultError as err:
                    failed.append(f"{manifest.id}: {err}")
        if failed:
            raise PartialFailure(f"deleted {len(deleted)} shadow set(s); not deleted: " + "; ".join(failed))
        return deleted

    def _in_progress(self, manifest: ShadowSetManifest) -> bool:
        """A set its (living) requester is still creating: never evicted from under it."""
        return manifest.state == "creating" and process_alive(manifest.requester_pid, manifest.created)

    def enforce_limit(self, volume_mount: str, max_per_volume: int | None = None) -> list[str]:
        """Release the oldest sets holding a shadow of `volume_mount` until a new one fits.

        Returns the released ids. The limit defaults to `max_shadows_per_volume()`.
        """
        limit = max_shadows_per_volume() if max_per_volume is None else max_per_volume
        if limit < 1:
            raise UsageError("the maximum number of shadows per volume must be at least 1")
        released = []
        with self.locked():
            holding = [m for m in self.list() if any(s.volume == volume_mount for s in m.shadows)]
            evictable = [m for m in holding if not self._in_progress(m)]
            count = len(holding)
            while count >= limit and evictable:
                oldest = evictable.pop(0)
                self.release(oldest.id)
                released.append(oldest.id)
                count -= 1
        for set_id in released:
            log.info("released shadow set %s: %s holds at most %d shadows", set_id, volume_mount, limit)
        return released

    def reap(self, volumes: Iterable[str] = ()) -> list[str]:
        """Release the sets whose requester has ended, then delete orphan images; returns the released ids.

        Released: non-persistent sets, and unfinished ones: a set still `creating` or left `aborted`
        by a dead requester is released even if it was asked to be persistent (it never became a
        usable set), with everything its intent named. Then every image no set of this store knows
        is deleted from the volumes this store uses and from `volumes` (mount points: a creator
        passes the volumes of its new set), see `remove_orphan_images`.
        """
        released = []
        with self.locked():
            for set_id in self._intent_ids():
                if not self._record(set_id).exists():  # a release cut short between record and intent
                    try:
                        self._release_intent(set_id)
                    except ShadowvaultError as err:
                        log.warning("could not delete the leftovers of shadow set %s: %s", set_id, err)
            for manifest in self.list():
                if manifest.requester_pid is None:
                    continue  # nobody to outlive: kept until deleted
                if process_alive(manifest.requester_pid, manifest.created):
                    continue
                if manifest.persistent and manifest.state not in (*UNFINISHED_STATES, "released"):
                    continue
                try:
                    self.release(manifest.id)
                    released.append(manifest.id)
                except ShadowvaultError as err:
                    log.warning("could not release shadow set %s of an ended requester: %s", manifest.id, err)
            self.remove_orphan_images(volumes)
        return released

    def remove_orphan_images(self, volumes: Iterable[str] = ()) -> list[str]:
        """Delete the images no set of this store knows; returns their paths.

        Looked for on the volumes this store has made shadows on (`.volumes`, while each is mounted
        with the same filesystem) and on `volumes`, by each provider in its own place and naming
        only (`found_images`). An image is an orphan when neither a record nor an intent of this
        store names its set: its maker died after losing the record, or the record was removed by
        hand. Runs under the store's lock, so no creator can record a new set meanwhile.
        """
        removed: list[str] = []
        with self.locked():
            known_ids = set(self._ids()) | set(self._intent_ids())
            for volume in self._volumes_to_search(volumes):
                for provider in all_providers():
                    removed.extend(self._remove_orphans_of(provider, volume, known_ids))
        return removed

    @staticmethod
    def _remove_orphans_of(provider: Provider, volume: Volume, known_ids: set[str]) -> list[str]:
        try:
            found = provider.found_images(volume)
        except OSError as err:
            log.warning("cannot look for %s shadows on %s: %s", provider.name, volume.mount_point, err)
            return []
        removed = []
        for image in found:
            if image.set_id in known_ids:
                continue
            try:
                provider.delete(image.shadow)
            except ShadowvaultError as err:
                log.warning("cannot delete orphan shadow %s: %s", image.shadow.path, err)
                continue
            log.info(
                "deleted %s: a shadow of set %s, which no longer exists", image.shadow.path, image.set_id
            )
            removed.append(image.shadow.path)
        return removed

    def _volumes_to_search(self, extra: Iterable[str]) -> list[Volume]:
        """The mounted volumes to look for orphans on; forgets known volumes that are gone and unused."""
        mounted = {v.mount_point: v for v in list_volumes(with_uuid=False)}
        known = self.known_volumes()
        in_use = {s.volume for m in self.list() for s in m.shadows}
        kept, chosen = [], {}
        for entry in known:
            volume = mounted.get(entry.mount_point)
            same_fs = volume is not None and (
                not entry.fs_uuid or filesystem_uuid(volume.device) in (entry.fs_uuid, None)
            )
            if volume is not None and same_fs:
                chosen[entry.mount_point] = msgspec.structs.replace(volume, fs_uuid=entry.fs_uuid)
            if same_fs or entry.mount_point in in_use:
                kept.append(entry)
        if len(kept) != len(known):
            self._write_volumes(kept)
        for mount_point in extra:
            volume = mounted.get(os.path.realpath(mount_point))
            if volume is not None and volume.mount_point not in chosen:
                chosen[volume.mount_point] = volume
        return list(chosen.values())

    # -- exposures ----------------------------------------------------------------------------

    def exposures(self, set_id: str | None = None) -> list[Exposure]:
        """The exposures of one set, or of every set."""
        ids = [set_id] if set_id else self._ids()
        found: list[Exposure] = []
        for sid in ids:
            try:
                data = self._exposed_record(sid).read_bytes()
            except FileNotFoundError:
                continue
            try:
                found.extend(msgspec.json.decode(data, type=list[Exposure]))
            except msgspec.DecodeError as err:
                log.warning("exposure record of %s is damaged: %s", sid, err)
        return found

    def _write_exposures(self, set_id: str, exposures: list[Exposure]) -> None:
        path = self._exposed_record(set_id)
        if exposures:
            atomic_write(path, msgspec.json.encode(exposures), mode=0o600)
        else:
            path.unlink(missing_ok=True)

    @staticmethod
    def _pick_shadow(manifest: ShadowSetManifest, volume_or_index: str | int | None) -> tuple[int, Shadow]:
        if not manifest.shadows:
            raise UsageError(f"shadow set {manifest.id} has no shadows")
        if volume_or_index is None:
            return 0, manifest.shadows[0]
        if isinstance(volume_or_index, int) or str(volume_or_index).isdigit():
            index = int(volume_or_index)
            if index >= len(manifest.shadows):
                count = len(manifest.shadows)
                raise UsageError(f"shadow set {manifest.id} has {count} shadow(s), no #{index}")
            return index, manifest.shadows[index]
        wanted = os.path.realpath(str(volume_or_index))
        for index, shadow in enumerate(manifest.shadows):
            if shadow.volume in (wanted, str(volume_or_index)):
                return index, shadow
        volumes = ", ".join(s.volume for s in manifest.shadows)
        raise UsageError(f"shadow set {manifest.id} has no shadow of {volume_or_index} (it has {volumes})")

    def expose(self, set_id: str, volume_or_index: str | int | None, at: Path | str) -> Exposure:
        """Mount one shadow of the set read-only at `at` (created if missing) and record it."""
        with self.locked():
            manifest = self.load(set_id)
            if manifest.state != "created":
                raise UsageError(f"shadow set {manifest.id} cannot be exposed: it is {manifest.state}")
            index, shadow = self._pick_shadow(manifest, volume_or_index)
            target = os.path.realpath(str(at))
            for exposure in self.exposures():
                if exposure.at == target:
                    raise UsageError(f"{target} already exposes shadow set {exposure.set_id}")
            created_dir = False
            if not os.path.lexists(target):
                try:
                    os.makedirs(target, mode=0o755)
                except OSError as err:
                    raise UsageError(f"cannot create {target}: {err.strerror}") from err
                created_dir = True
            elif not os.path.isdir(target):
                raise UsageError(f"{target} is not a directory")
            elif mounts.is_mount_point(target):
                raise UsageError(f"{target} is already a mount point")
            try:
                mounts.bind_readonly(shadow.path, target)
            except BaseException:
                if created_dir:
                    with contextlib.suppress(OSError):
                        os.rmdir(target)
                raise
            exposure = Exposure(
                set_id=manifest.id,
                volume=shadow.volume,
                index=index,
                source=shadow.path,
                at=target,
                created_dir=created_dir,
                created=time.time(),
            )
            try:
                self._write_exposures(manifest.id, [*self.exposures(manifest.id), exposure])
            except BaseException:
                mounts.unmount(target)
                raise
            return exposure

    def unexpose(self, at: Path | str | None = None, set_id: str | None = None) -> list[str]:
        """Unmount the exposure at `at`, or every exposure of `set_id`; returns the unmounted paths."""
        if at is None and set_id is None:
            raise UsageError("say which exposure to remove: a directory or a shadow set")
        with self.locked():
            target = os.path.realpath(str(at)) if at is not None else None
            chosen = [e for e in self.exposures(set_id) if target is None or e.at == target]
            if target is not None and not chosen:
                raise NotFoundError(f"{target}: no shadow is exposed there")
            done = []
            for exposure in chosen:
                mounts.unmount(exposure.at)
                if exposure.created_dir:
                    try:
                        os.rmdir(exposure.at)
                    except OSError as err:
                        if err.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                            log.warning("could not remove %s: %s", exposure.at, err.strerror)
                left = [e for e in self.exposures(exposure.set_id) if e.at != exposure.at]
                self._write_exposures(exposure.set_id, left)
                done.append(exposure.at)
            return done
