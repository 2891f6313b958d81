"""Whether the shadows of a set still hold their point in time: asked after a requester read them,
before one is exposed, and when the sets are listed.

Some images can go bad while they exist: a classic LVM snapshot whose space for changes fills up is
dropped by the kernel, yet its mount may keep serving cached pages, so a backup read from it could
look fine and be garbage. The requester asks every provider after reading (`ensure_valid`), an
exposure is refused for a bad shadow (`ensure_exposable`), and `shadows list` asks too (`refresh`),
so a persistent set that went bad says so before anyone reads it. A bad shadow is marked invalid in
the store's record of its set, for good: an image that lost its point in time never gets it back.
One whose provider cannot tell now (a failing `lvs`) is not marked: a read of it is not kept and it
is not exposed, and the next listing asks again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from shadowvault.errors import ShadowError, ShadowUncheckedError, ShadowvaultError
from shadowvault.shadow.manifest import Shadow, ShadowSetManifest
from shadowvault.shadow.providers.registry import get_provider
from shadowvault.shadow.store import ShadowStore

log = logging.getLogger(__name__)


class ShadowInvalidError(ShadowError):
    """A shadow stopped holding its point in time while it was read: what was read must not be kept."""


def problems(
    manifest: ShadowSetManifest, shadows: Sequence[Shadow] | None = None, unchecked: list[str] | None = None
) -> list[str]:
    """For each shadow of the set (or of `shadows`, some of its) that went bad, why (in words for the
    user), also set as the shadow's `invalid`; [] when all are good. Those whose provider cannot tell
    now are not marked: why goes to `unchecked`."""
    found = []
    for shadow in manifest.shadows if shadows is None else shadows:
        if not shadow.provider:
            continue
        try:
            provider = get_provider(shadow.provider)
        except ShadowvaultError:
            continue
        try:
            problem = provider.problem(shadow)
        except ShadowUncheckedError as err:
            if unchecked is not None:
                unchecked.append(str(err))
            continue
        if problem:
            shadow.invalid = problem
            found.append(problem)
    return found


def mark_invalid(manifest: ShadowSetManifest, store: ShadowStore | None = None) -> None:
    """Record the shadows' `invalid` reasons in the store's record of the set, if this store has it."""
    store = store or ShadowStore()
    try:
        with store.locked():
            if manifest.id not in store.ids():
                return
            record = store.load(manifest.id)
            reasons = {s.volume: s.invalid for s in manifest.shadows if s.invalid}
            for shadow in record.shadows:
                shadow.invalid = reasons.get(shadow.volume, shadow.invalid)
            store.save(record)
    except (ShadowvaultError, OSError) as err:
        log.warning("cannot mark shadow set %s invalid in %s: %s", manifest.id, store.root, err)


def ensure_valid(manifest: ShadowSetManifest, store: ShadowStore | None = None) -> None:
    """Raise ShadowInvalidError (after marking the set) when a shadow no longer holds its point in time."""
    unchecked: list[str] = []
    found = problems(manifest, unchecked=unchecked)
    if found:
        mark_invalid(manifest, store)
    if found or unchecked:  # a read nobody can vouch for is not kept either
        raise ShadowInvalidError("; ".join(found + unchecked) + "; what was read from it is not kept")


def ensure_exposable(manifest: ShadowSetManifest, shadow: Shadow, store: ShadowStore | None = None) -> None:
    """Raise ShadowInvalidError when `shadow`, about to be exposed, is marked invalid or went bad (then
    marked). A set that is not `created` is refused by the exposure itself."""
    if manifest.state != "created":
        return
    unchecked: list[str] = []
    if not shadow.invalid and problems(manifest, [shadow], unchecked):
        mark_invalid(manifest, store)
    if shadow.invalid or unchecked:
        why = shadow.invalid or unchecked[0]
        raise ShadowInvalidError(f"cannot expose the shadow of {shadow.volume}: {why}")


def refresh(manifests: Iterable[ShadowSetManifest], store: ShadowStore | None = None) -> dict[str, list[str]]:
    """Ask the providers about the shadows of the listed sets that are not known to be bad yet, and
    mark those that went bad: a listing tells the truth about a persistent set nobody has read.

    Returns, by set id, why shadows could not be checked now: for the listing to warn (never
    recorded: the next listing asks again)."""
    warnings: dict[str, list[str]] = {}
    for manifest in manifests:
        if manifest.state != "created":
            continue
        unchecked: list[str] = []
        if problems(manifest, [s for s in manifest.shadows if not s.invalid], unchecked):
            mark_invalid(manifest, store)
        if unchecked:
            warnings[manifest.id] = unchecked
    return warnings
