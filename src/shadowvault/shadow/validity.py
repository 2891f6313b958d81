"""Whether the shadows of a set still hold their point in time, asked after a requester read them.

Some images can go bad while they exist: a classic LVM snapshot whose space for changes fills up is
dropped by the kernel, yet its mount may keep serving cached pages, so a backup read from it could
look fine and be garbage. The requester asks every provider after reading (`ensure_valid`); a bad
shadow is marked invalid in the store's record of its set and the read fails loudly.
"""

from __future__ import annotations

import logging

from shadowvault.errors import ShadowError, ShadowvaultError
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.providers.registry import get_provider
from shadowvault.shadow.store import ShadowStore

log = logging.getLogger(__name__)


class ShadowInvalidError(ShadowError):
    """A shadow stopped holding its point in time while it was read: what was read must not be kept."""


def problems(manifest: ShadowSetManifest) -> list[str]:
    """For each shadow of the set that went bad, why (in words for the user); [] when all are good."""
    found = []
    for shadow in manifest.shadows:
        if not shadow.provider:
            continue
        try:
            provider = get_provider(shadow.provider)
        except ShadowvaultError:
            continue
        problem = provider.problem(shadow)
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
    found = problems(manifest)
    if not found:
        return
    mark_invalid(manifest, store)
    raise ShadowInvalidError("; ".join(found) + "; what was read from it is not kept")
