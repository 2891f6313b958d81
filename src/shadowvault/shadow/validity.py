"""Whether the shadows of a set still hold their point in time: asked after a requester read them,
before one is exposed, and when the sets are listed.

Some images can go bad while they exist: a classic LVM snapshot whose space for changes fills up is
dropped by the kernel, yet its mount may keep serving cached pages, so a backup read from it could
look fine and be garbage. The requester asks every provider after reading (`ensure_valid`), an
exposure is refused for a bad shadow (`ensure_exposable`), and `shadows list` asks too (`refresh`),
so a persistent set that went bad says so before anyone reads it. A bad shadow is marked invalid in
the store's record of its set, for good: an image that lost its point in time never gets it back;
its exposures are unmounted then (one in use stays, the listing says so and tries again). Each
provider is asked once for all the shadows a listing shows (lvm: one `lvs`).
One whose provider cannot tell now (a failing `lvs`) is not marked: a read of it is not kept and it
is not exposed, and the next listing asks again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from shadowvault.errors import ShadowError, ShadowUncheckedError, ShadowvaultError
from shadowvault.shadow import exposure as exposing
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
    asked = list(manifest.shadows if shadows is None else shadows)
    cannot_tell: dict[str, list[Shadow]] = {}
    bad = _ask(asked, cannot_tell)
    if unchecked is not None:
        unchecked.extend(cannot_tell)
    return [shadow.invalid for shadow in bad]


def _ask(shadows: Sequence[Shadow], cannot_tell: dict[str, list[Shadow]]) -> list[Shadow]:
    """Ask each provider once about all of its `shadows` (one lvs for every lvm shadow listed), set
    `invalid` on those that went bad and return them; why a provider cannot tell now goes to
    `cannot_tell`, with the shadows it could not check."""
    by_provider: dict[str, list[Shadow]] = {}
    for shadow in shadows:
        if shadow.provider:
            by_provider.setdefault(shadow.provider, []).append(shadow)
    bad = []
    for name, group in by_provider.items():
        try:
            provider = get_provider(name)
        except ShadowvaultError:
            continue  # a provider this build does not know: nothing to ask
        try:
            found = provider.problems(group)
        except ShadowUncheckedError as err:
            cannot_tell.setdefault(str(err), []).extend(group)
            continue
        for shadow, problem in zip(group, found, strict=True):
            if problem:
                shadow.invalid = problem
                bad.append(shadow)
    return bad


def mark_invalid(manifest: ShadowSetManifest, store: ShadowStore | None = None) -> list[str]:
    """Record the shadows' `invalid` reasons in the store's record of the set, if this store has it,
    and unmount the exposures of its invalid shadows (withdraw_exposures: why some stay mounted)."""
    store = store or ShadowStore()
    try:
        with store.locked():
            if manifest.id not in store.ids():
                return []
            record = store.load(manifest.id)
            reasons = {s.volume: s.invalid for s in manifest.shadows if s.invalid}
            for shadow in record.shadows:
                shadow.invalid = reasons.get(shadow.volume, shadow.invalid)
            store.save(record)
            return withdraw_exposures(record, store)
    except (ShadowvaultError, OSError) as err:
        log.warning("cannot mark shadow set %s invalid in %s: %s", manifest.id, store.root, err)
        return []


def withdraw_exposures(manifest: ShadowSetManifest, store: ShadowStore) -> list[str]:
    """Unmount every exposure of the set's invalid shadows: a snapshot the kernel dropped may go on
    serving cached pages there, plausible and wrong. Never lazily: one in use stays, and why (for
    the listing to say; each listing tries again) is returned."""
    invalid = {index for index, shadow in enumerate(manifest.shadows) if shadow.invalid}
    left = []
    for exposure in exposing.exposures(store, manifest.id) if invalid else []:
        if exposure.index not in invalid:
            continue
        try:
            exposing.unexpose(store, at=exposure.at)
            log.info("unexposed %s: the shadow of %s is invalid", exposure.at, exposure.volume)
        except (ShadowvaultError, OSError) as err:
            left.append(
                f"the shadow of {exposure.volume} (set {manifest.id}) is invalid and still exposed: {err}; "
                "reads there may return wrong data: close what is open there (the next listing unexposes it)"
            )
    return left


def ensure_valid(manifest: ShadowSetManifest, store: ShadowStore | None = None) -> None:
    """Raise ShadowInvalidError (after marking the set) when a shadow no longer holds its point in time."""
    unchecked: list[str] = []
    found = problems(manifest, unchecked=unchecked)
    if found:
        _log(mark_invalid(manifest, store))
    if found or unchecked:  # a read nobody can vouch for is not kept either
        raise ShadowInvalidError("; ".join(found + unchecked) + "; what was read from it is not kept")


def ensure_exposable(manifest: ShadowSetManifest, shadow: Shadow, store: ShadowStore | None = None) -> None:
    """Raise ShadowInvalidError when `shadow`, about to be exposed, is marked invalid or went bad (then
    marked). A set that is not `created` is refused by the exposure itself."""
    if manifest.state != "created":
        return
    unchecked: list[str] = []
    if not shadow.invalid and problems(manifest, [shadow], unchecked):
        _log(mark_invalid(manifest, store))
    if shadow.invalid or unchecked:
        why = shadow.invalid or unchecked[0]
        raise ShadowInvalidError(f"cannot expose the shadow of {shadow.volume}: {why}")


def _log(warnings: list[str]) -> None:
    for why in warnings:
        log.warning("%s", why)


def refresh(manifests: Iterable[ShadowSetManifest], store: ShadowStore | None = None) -> dict[str, list[str]]:
    """Ask the providers about the shadows of the listed sets that are not known to be bad yet (each
    provider once for all of them), mark those that went bad, and unmount the exposures of invalid
    shadows: a listing tells the truth about a persistent set nobody has read.

    Returns, by set id, why shadows could not be checked now and which exposures of invalid shadows
    stay mounted (in use): for the listing to warn (never recorded: the next listing tries again)."""
    store = store or ShadowStore()
    listed = [m for m in manifests if m.state == "created"]
    owner = {id(s): m for m in listed for s in m.shadows if not s.invalid}
    cannot_tell: dict[str, list[Shadow]] = {}
    bad = _ask([s for m in listed for s in m.shadows if id(s) in owner], cannot_tell)
    newly_bad = {owner[id(s)].id for s in bad}
    warnings: dict[str, list[str]] = {}
    for why, shadows in cannot_tell.items():
        for set_id in dict.fromkeys(owner[id(s)].id for s in shadows):
            warnings.setdefault(set_id, []).append(why)
    for manifest in listed:
        if manifest.id in newly_bad:
            left = mark_invalid(manifest, store)
        elif any(s.invalid for s in manifest.shadows):
            left = withdraw_exposures(manifest, store)
        else:
            continue
        if left:
            warnings.setdefault(manifest.id, []).extend(left)
    return warnings
