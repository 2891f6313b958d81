"""The shadow-set store: one manifest per set in the state directory, and the sets' lifecycle.

Layout under `<state dir>/sets/`:

    <id>.json       the set's ShadowSetManifest, written atomically (temp file, fsync, rename)
    <id>.exposed    JSON list of the set's exposures (read-only bind mounts, exposure.py)
    <id>.intent     JSON list of the shadows the set's providers are about to make (see below)
    .volumes        JSON list of the volumes this store has made shadows on (orphans.py)
    .lock           flock()ed while a record is written or a set is released, so that several
                    processes (create, delete, reap) can work at once (store_lock.py)

Limits like VSS's: at most `max_shadows_per_volume()` shadows per volume (oldest deleted first),
and sets that are not persistent are released once their requester process has ended (`reap`,
liveness.py).

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

import builtins
import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import msgspec

from shadowvault import config_file, paths
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
from shadowvault.shadow import exposure, orphans
from shadowvault.shadow.liveness import process_alive
from shadowvault.shadow.manifest import Shadow, ShadowSetManifest, decode, encode
from shadowvault.shadow.providers.hidden_dir import ShadowUnreachableError
from shadowvault.shadow.providers.own_images import ForeignImageError
from shadowvault.shadow.providers.registry import get_provider
from shadowvault.shadow.store_lock import lock_for
from shadowvault.typed_decoding import decode_json

log = logging.getLogger(__name__)

DEFAULT_MAX_SHADOWS_PER_VOLUME = 64
RECORD_SUFFIX = ".json"
INTENT_SUFFIX = ".intent"
SET_ID_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
UNFINISHED_STATES = ("creating", "aborted")


def max_shadows_per_volume() -> int:
    """`max_shadows_per_volume` from `<config dir>/shadowvault.toml`, default 64."""
    value = config_file.settings().get("max_shadows_per_volume", DEFAULT_MAX_SHADOWS_PER_VOLUME)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(
            f"{config_file.config_path()}: max_shadows_per_volume must be a whole number >= 1, not {value!r}"
        )
    return value


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
        with lock_for(self.root / ".lock"):
            yield

    def _record(self, set_id: str) -> Path:
        return self.root / f"{set_id}{RECORD_SUFFIX}"

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
            orphans.remember_volumes(self, manifest.shadows)

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
            orphans.remember_volumes(self, planned)

    def intent(self, set_id: str) -> list[Shadow]:
        """The shadows set `set_id` said it was about to make ([] when it said nothing)."""
        try:
            data = self._intent_record(set_id).read_bytes()
        except FileNotFoundError:
            return []
        try:
            return decode_json(data, list[Shadow])
        except msgspec.DecodeError as err:
            raise ShadowError(f"the intent record of shadow set {set_id} is damaged: {err}") from err

    def clear_intent(self, set_id: str) -> None:
        """The set's record now lists every shadow it made: the intent is no longer needed."""
        with self.locked():
            self._intent_record(set_id).unlink(missing_ok=True)

    def intent_ids(self) -> builtins.list[str]:
        """The ids of the sets that have an intent record."""
        try:
            names = os.listdir(self.root)
        except (FileNotFoundError, PermissionError):
            return []
        suffix = len(INTENT_SUFFIX)
        return [n[:-suffix] for n in names if n.endswith(INTENT_SUFFIX) and not n.startswith(".")]

    def ids(self) -> builtins.list[str]:
        """The ids of the sets that have a record."""
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
        ids = self.ids()
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
        for set_id in self.ids():
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
                exposure.forget(self, set_id)
                self._release_intent(set_id)  # a leftover of a release that was cut short
                return
            manifest = self._read(set_id)
            exposure.unexpose(self, set_id=set_id)
            remaining: builtins.list[Shadow] = []
            failures: builtins.list[ShadowvaultError] = []
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
        set's record is gone too, `orphans.remove_orphan_images` finds whatever it named.
        """
        try:
            planned = [s for s in self.intent(set_id) if s.path not in already]
        except ShadowError as err:
            log.warning("%s; dropped", err)
            planned = []
        remaining: builtins.list[Shadow] = []
        failures: builtins.list[ShadowvaultError] = []
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
        except ForeignImageError as err:
            log.warning("%s", err)

    def delete_oldest(self) -> str:
        """Release the oldest set and return its id."""
        with self.locked():
            sets = self.list()
            if not sets:
                raise NotFoundError("there are no shadow sets")
            self.release(sets[0].id)
            return sets[0].id

    def delete_all(self) -> builtins.list[str]:
        """Release every set; returns the released ids (PartialFailure if some could not be)."""
        deleted: builtins.list[str] = []
        failed: builtins.list[str] = []
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

    def enforce_limit(self, volume_mount: str, max_per_volume: int | None = None) -> builtins.list[str]:
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

    def _ended(self, manifest: ShadowSetManifest) -> bool:
        """Whether reap releases this set: its requester has ended and it is not a finished persistent set."""
        if manifest.requester_pid is None or process_alive(manifest.requester_pid, manifest.created):
            return False
        return not (manifest.persistent and manifest.state not in (*UNFINISHED_STATES, "released"))

    def has_ended_requesters(self) -> bool:
        """Whether reap has a set to release (looked at without the store's lock: a hint, for a
        caller that lists often and would otherwise queue every listing behind the lock)."""
        if any(not self._record(set_id).exists() for set_id in self.intent_ids()):
            return True
        return any(self._ended(manifest) for manifest in self.list())

    def reap(self, volumes: Iterable[str] = ()) -> builtins.list[str]:
        """Release the sets whose requester has ended, then delete orphan images; returns the released ids.

        Released: non-persistent sets, and unfinished ones: a set still `creating` or left `aborted`
        by a dead requester is released even if it was asked to be persistent (it never became a
        usable set), with everything its intent named. Then every image no set of this store knows
        is deleted from the volumes this store uses and from `volumes` (mount points: a creator
        passes the volumes of its new set), see `orphans.remove_orphan_images`.
        """
        released = []
        with self.locked():
            for set_id in self.intent_ids():
                if not self._record(set_id).exists():  # a release cut short between record and intent
                    try:
                        self._release_intent(set_id)
                    except ShadowvaultError as err:
                        log.warning("could not delete the leftovers of shadow set %s: %s", set_id, err)
            for manifest in self.list():
                if not self._ended(manifest):
                    continue  # its requester lives, or nobody to outlive: kept until deleted
                try:
                    self.release(manifest.id)
                    released.append(manifest.id)
                except ShadowvaultError as err:
                    log.warning("could not release shadow set %s of an ended requester: %s", manifest.id, err)
            orphans.remove_orphan_images(self, volumes)
        return released
