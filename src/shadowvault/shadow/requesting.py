"""Where a requester gets its shadow sets: this process's coordinator, or the daemon's (docs/api.md).

`ShadowSets` is the one seam: `exec`, `backup` and `shadows ...` ask it, and do not know whether the
set is made here or by `shadowvault daemon`. `InProcess` is the coordinator and the store of this
process (the embedded default, and `--no-daemon`); the daemon's side is `shadowvault.daemon_sets`.
Both answer with the same manifests and exposures, so the commands print the same either way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from shadowvault.errors import PermissionDeniedError, ShadowvaultError
from shadowvault.shadow import coordinator, validity
from shadowvault.shadow import exposure as exposing
from shadowvault.shadow.exposure import Exposure
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.privilege import check_may_create_shadow_sets, needs_root
from shadowvault.shadow.store import ShadowStore

log = logging.getLogger(__name__)


class ShadowSets(Protocol):
    """Making, reading and releasing shadow sets, wherever the coordinator runs."""

    def shadow_set(
        self, volumes: Sequence[str], options: SetOptions, *, hint: str = ""
    ) -> AbstractContextManager[ShadowSetManifest]:
        """A set for a `with` block; backup_complete(succeeded) and its release on leaving it.

        `hint` ends the refusal a user who may not make sets gets (what to do instead).
        """
        ...

    def create(self, volumes: Sequence[str], options: SetOptions) -> ShadowSetManifest:
        """A set that stays (persistent) until `delete`."""
        ...

    def list_sets(
        self, on_warning: Callable[[str], None] | None = None
    ) -> list[tuple[ShadowSetManifest, list[Exposure]]]:
        """Every set the caller may see, oldest first, with its exposures (ended requesters' reaped;
        a reap that failed is told to `on_warning`, and the listing goes on)."""
        ...

    def delete(self, ref: str | None = None, *, oldest: bool = False) -> list[str]:
        """Release the set `ref` (id or unique prefix), the oldest, or (neither) all; their ids."""
        ...

    def expose(self, ref: str, volume: str | None, at: str | None) -> Exposure:
        """Mount one shadow of a set read-only (nosuid, nodev) at `at`, or at a private directory."""
        ...

    def unexpose(self, ref: str | None = None, at: str | None = None) -> list[str]:
        """Unmount the exposure at `at`, or every exposure of the set `ref`; the unmounted paths."""
        ...


class InProcess:
    """This process is the coordinator: the freeze runs here, under the machine's set locks."""

    def shadow_set(
        self, volumes: Sequence[str], options: SetOptions, *, hint: str = ""
    ) -> AbstractContextManager[ShadowSetManifest]:
        check_may_create_shadow_sets(hint=hint)  # told before any writer is touched
        return _root_shadow_set(volumes, options)

    def create(self, volumes: Sequence[str], options: SetOptions) -> ShadowSetManifest:
        check_may_create_shadow_sets()
        with needs_root():
            return coordinator.create_shadow_set(list(volumes), options)

    def list_sets(
        self, on_warning: Callable[[str], None] | None = None
    ) -> list[tuple[ShadowSetManifest, list[Exposure]]]:
        store = ShadowStore()
        try:
            store.reap()
        except PermissionDeniedError:
            pass  # a user who may not release sets may still list them (or is told why not)
        except ShadowvaultError as err:
            (on_warning or log.warning)(f"sets of ended requesters were not released: {err}")
        listed = store.list()
        warnings = validity.refresh(listed, store).values()  # may unexpose invalid shadows
        for why in dict.fromkeys(why for reasons in warnings for why in reasons):  # one lvs, told once
            (on_warning or log.warning)(why)
        exposures = exposing.exposures(store)
        return [(m, [e for e in exposures if e.set_id == m.id]) for m in listed]

    def delete(self, ref: str | None = None, *, oldest: bool = False) -> list[str]:
        store = ShadowStore()
        if ref is not None:
            set_id = store.load(ref).id
            store.release(set_id)
            return [set_id]
        if oldest:
            return [store.delete_oldest()]
        return store.delete_all()

    def expose(self, ref: str, volume: str | None, at: str | None) -> Exposure:
        store = ShadowStore()
        manifest = store.load(ref)
        validity.ensure_exposable(manifest, exposing.pick_shadow(manifest, volume)[1], store)
        return exposing.expose(store, manifest.id, volume, at)

    def unexpose(self, ref: str | None = None, at: str | None = None) -> list[str]:
        store = ShadowStore()
        if ref is not None:
            return exposing.unexpose(store, at=at, set_id=store.load(ref).id)
        return exposing.unexpose(store, at=at)


@contextlib.contextmanager
def _root_shadow_set(volumes: Sequence[str], options: SetOptions) -> Iterator[ShadowSetManifest]:
    with needs_root(), coordinator.shadow_set(volumes, options) as manifest:
        yield manifest


IN_PROCESS = InProcess()
