"""Prune's first judgement of the snapshots (step 4): mark what they use, or stop before anything
is deleted, naming the repair that helps. Prune never guesses: a blob a snapshot uses that no index
lists may be in a pack the index lost (`repair index` gives it back), or lost for good (the
snapshots using it must be forgotten or repaired)."""

from __future__ import annotations

from shadowvault.display import counted
from shadowvault.errors import RepositoryError, ShadowvaultError
from shadowvault.repo.repair_snapshots import way_out
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.unindexed_packs import look_in_unindexed
from shadowvault.repo.walk import mark_used


def mark_or_refuse(
    repo: Repository, snapshots: list[tuple[str, Snapshot]], used: set[bytes], *, unindexed: list[str]
) -> None:
    """Mark what the snapshots use, or stop: prune never guesses. When a snapshot uses a blob no
    index lists while packs the index does not know hold it (by their headers), the index lost
    entries (a deleted or damaged index file), and deleting those packs as leftovers would delete the
    snapshot's data: `repair index` re-reads their headers. When such packs have unreadable headers
    instead, no repair can index them: the snapshots that use what is lost must go (their repaired
    copies keep the rest). Otherwise an unreadable tree needs `repair snapshots`."""
    unreadable: list[tuple[str, bytes, ShadowvaultError]] = []
    mark_used(repo, snapshots, used, on_error=lambda sid, tree, err: unreadable.append((sid, tree, err)))
    missing = _missing(repo, used, unreadable) if unindexed else set()
    if missing:
        look = look_in_unindexed(repo, unindexed, missing)
        if look.holding:
            raise RepositoryError(
                "prune refuses to run: snapshots use blobs that no index lists, and there are packs the"
                " index does not know that hold them; run `shadowvault repair index` first"
            )
        if look.unreadable:
            stuck = _snapshots_using(repo, snapshots, missing)
            raise RepositoryError(
                f"prune refuses to run: snapshots {' '.join(sid[:8] for sid in stuck)} use blobs that no"
                f" index lists, and {counted(len(look.unreadable), 'pack')} the index does not know"
                " have an unreadable header (damaged: no repair can index their blobs, so `repair"
                f" index` cannot help); run {way_out(snapshots, stuck)}, then prune (it removes those"
                " packs)"
            )
    if unreadable:
        sid, tree, err = unreadable[0]
        stuck = _snapshots_using(repo, snapshots, {tree for _, tree, _ in unreadable})
        raise RepositoryError(
            f"prune refuses to run: snapshot {sid[:8]} references tree {tree.hex()[:16]} that cannot be"
            f" read ({err}); run `shadowvault check`, then {way_out(snapshots, stuck)}"
        )


def _missing(
    repo: Repository, used: set[bytes], unreadable: list[tuple[str, bytes, ShadowvaultError]]
) -> set[bytes]:
    """The used blobs and unreadable trees that no index lists."""
    found = {blob_id for blob_id in used if repo.lookup(blob_id) is None}
    return found | {tree for _, tree, _ in unreadable if repo.lookup(tree) is None}


def _snapshots_using(repo: Repository, snapshots: list[tuple[str, Snapshot]], lost: set[bytes]) -> list[str]:
    """The snapshots that reference a `lost` blob or a tree that cannot be read (each walked on its
    own: only when prune refuses)."""
    return [sid for sid, snap in snapshots if _reaches_lost(repo, sid, snap, lost)]


def _reaches_lost(repo: Repository, sid: str, snap: Snapshot, lost: set[bytes]) -> bool:
    failed: list[bytes] = []
    reached: set[bytes] = set()
    mark_used(repo, [(sid, snap)], reached, on_error=lambda _sid, tree, _err: failed.append(tree))
    return bool(failed) or not lost.isdisjoint(reached)
