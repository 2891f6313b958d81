"""The packs no index lists, looked at through their own headers: whether `repair index` could give
back the blobs snapshots miss (check's advice, prune's refusal), or nothing can, as a pack whose
header is unreadable cannot be indexed and its blobs are lost. Without this both sent the user to
`repair index` again and again."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

from shadowvault.errors import NotFoundError, ShadowvaultError
from shadowvault.repo.pack import read_header
from shadowvault.repo.repository import Repository


class UnindexedPacks(NamedTuple):
    holding: list[str]  # headers list a wanted blob: `repair index` adds them
    unreadable: list[str]  # headers that cannot be read: no command can index their blobs


def look_in_unindexed(repo: Repository, pack_ids: Iterable[str], wanted: Collection[bytes]) -> UnindexedPacks:
    """Read the header of each pack in `pack_ids` (two range reads each) and sort out those that
    hold a `wanted` blob and those whose header is unreadable."""
    found = UnindexedPacks([], [])
    for pack_id in sorted(pack_ids):
        try:
            blobs = read_header(repo.backend, repo.sealer, pack_id)
        except NotFoundError:
            continue  # removed meanwhile
        except ShadowvaultError:
            found.unreadable.append(pack_id)
            continue
        if any(b.id in wanted for b in blobs):
            found.holding.append(pack_id)
    return found
