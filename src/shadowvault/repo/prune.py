"""Prune: delete data no snapshot references, safely while backups run. No exclusive lock.

The protocol (and why it is safe) is in docs/repository.md, "Sessions (no locks)"; the step
numbers in comments refer to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shadowvault.display import counted, human_size
from shadowvault.errors import NotFoundError, RepositoryError, ShadowvaultError
from shadowvault.repo.backend import Backend, FileInfo
from shadowvault.repo.damage import DamageMap, replace_damage
from shadowvault.repo.format import BlobType, IndexPack, Pending
from shadowvault.repo.pack import pack_name
from shadowvault.repo.prune_refusals import mark_or_refuse
from shadowvault.repo.prune_uploads import abandoned_uploads, abort_uploads
from shadowvault.repo.repository import Repository
from shadowvault.repo.session import (
    STALE_AFTER,
    SessionInfo,
    is_live,
    list_sessions,
    live_sessions,
    refuse_concurrent_maintenance,
)
from shadowvault.repo.walk import mark_used

log = logging.getLogger(__name__)

REPACK_UNUSED_FRACTION = 0.10


@dataclass
class PruneResult:
    dry_run: bool
    snapshots: int = 0
    packs: int = 0
    packs_deleted: int = 0
    bytes_deleted: int = 0
    packs_repacked: int = 0
    blobs_repacked: int = 0
    bytes_repacked: int = 0
    packs_pending: int = 0
    packs_kept_referenced: int = 0
    unindexed_deleted: int = 0
    temp_deleted: int = 0
    uploads_aborted: int = 0  # open multipart uploads a killed writer left (S3)
    sessions_removed: int = 0
    index_files_before: int = 0
    waiting_for: list[str] = field(default_factory=list)  # sessions that must end before pending go
    damaged_snapshots: list[str] = field(default_factory=list)  # unreadable snapshot files, skipped
    damaged_kept: list[str] = field(default_factory=list)  # packs holding the only copy of lost blobs

    def summary(self) -> str:
        deleted, repacked = ("would delete", "would repack") if self.dry_run else ("deleted", "repacked")
        packs = counted(self.packs_deleted + self.unindexed_deleted, "pack")
        text = f"{deleted} {packs} ({human_size(self.bytes_deleted)})"
        if self.packs_repacked:
            kept = counted(self.blobs_repacked, "blob")
            text += f", {repacked} {counted(self.packs_repacked, 'pack')} ({kept} kept)"
        if self.uploads_aborted:
            verb = "would abort" if self.dry_run else "aborted"
            text += f"; {verb} {counted(self.uploads_aborted, 'abandoned multipart upload')}"
        if self.packs_pending:
            text += (
                f"; {self.packs_pending} packs pending deletion until {len(self.waiting_for)} running"
                " backup(s) finish (run prune again later)"
            )
        if self.damaged_snapshots:
            text += (
                f"; skipped {len(self.damaged_snapshots)} damaged snapshot files (`shadowvault forget"
                f" {' '.join(sid[:8] for sid in self.damaged_snapshots)}` removes them)"
            )
        if self.damaged_kept:
            text += (
                f"; kept {len(self.damaged_kept)} damaged packs holding the only copy of some blobs"
                " (`shadowvault repair packs`, then `shadowvault repair snapshots`)"
            )
        return text


def _session_start(session: SessionInfo) -> float:
    if session.doc is not None:
        return session.doc.start
    return session.mtime - STALE_AFTER  # unreadable: assume the oldest start it could have


def _exists(backend: Backend, pack_id: str) -> bool:
    try:
        backend.stat(pack_name(pack_id))
    except NotFoundError:
        return False
    return True


def _merge_index(docs: list[list[IndexPack]]) -> dict[str, IndexPack]:
    """One entry per pack; pending if any copy says so (waits_for: union, None wins)."""
    merged: dict[str, IndexPack] = {}
    for packs in docs:
        for pack in packs:
            old = merged.get(pack.id)
            if old is None:
                merged[pack.id] = pack
                continue
            if pack.pending is not None:
                if old.pending is None:
                    old.pending = pack.pending
                elif old.pending.waits_for is None or pack.pending.waits_for is None:
                    old.pending = Pending(since=min(old.pending.since, pack.pending.since), waits_for=None)
                else:
                    old.pending = Pending(
                        since=min(old.pending.since, pack.pending.since),
                        waits_for=sorted(set(old.pending.waits_for) | set(pack.pending.waits_for)),
                    )
    return merged


def prune(
    repo: Repository,
    *,
    dry_run: bool = False,
    repack_unused_fraction: float = REPACK_UNUSED_FRACTION,
    upload_max_age: float | None = None,
) -> PruneResult:
    """Remove unreferenced data. `repo` must be opened with write=True, kind="prune".
    `upload_max_age`: seconds before an open multipart upload counts as abandoned (default: the
    backend's, 24 h on S3)."""
    if repo.session is None:
        raise RepositoryError("prune needs the repository opened for writing")
    own = repo.session.name
    result = PruneResult(dry_run=dry_run)
    backend = repo.backend

    # 1. Packs, temp files and open multipart uploads, before anything else.
    on_disk: dict[str, FileInfo] = {info.name.rsplit("/", 1)[1]: info for info in backend.list("data/")}
    temp_files = list(backend.list_temp())
    open_uploads = abandoned_uploads(backend, float("inf"), upload_max_age)
    # 2. Live sessions S1.
    sessions = [s for s in list_sessions(backend, repo.sealer) if s.name != own]
    s1 = [s for s in sessions if is_live(s)]
    dead_sessions = [s for s in sessions if not is_live(s)]
    refuse_concurrent_maintenance(s1, "prune")
    protect_from = min((_session_start(s) for s in s1), default=float("inf")) - backend.clock_margin
    # 3. Index files (after S1: a backup that ended before S1 has its index in this listing).
    index_names = repo.index_files()
    result.index_files_before = len(index_names)
    docs = []
    for name in index_names:
        try:
            docs.append(repo.load_index_file(name).packs)
        except NotFoundError:
            continue  # merged away by a live writer at its close; its packs are protected by S1
        except ShadowvaultError as err:
            raise RepositoryError(
                f"prune refuses to run: index file {name} is unreadable ({err});"
                " run `shadowvault repair index`"
            ) from err
    packs = _merge_index(docs)
    result.packs = len(packs)
    # 4. Snapshots and the blobs they use (a damaged tree stops prune; a damaged snapshot file is
    # unreadable for good, so it is reported and skipped rather than blocking every prune).
    snapshots = repo.list_snapshots()
    result.damaged_snapshots = sorted(repo.damaged_snapshots)
    seen_snapshots = {sid for sid, _ in snapshots} | set(repo.damaged_snapshots)
    result.snapshots = len(snapshots)
    repo.reload_index()  # lookups for the tree walk see every pack, pending ones included
    used: set[bytes] = set()
    mark_or_refuse(repo, snapshots, used, unindexed=[pid for pid in on_disk if pid not in packs])
    damage = repo.damage

    # 5. Candidates.
    candidates: dict[str, IndexPack] = {}
    repack: list[IndexPack] = []
    dropped_missing: list[str] = []
    intact_elsewhere = _intact_copies(packs, on_disk, damage)
    damaged_packs = damage.packs()
    for pack in packs.values():
        info = on_disk.get(pack.id)
        used_count = sum(1 for b in pack.blobs if b.id in used)
        if pack.id in damaged_packs:
            # A damaged pack goes once every used blob it holds has an intact copy elsewhere (or an
            # intact copy here that a repack saves); it stays while it holds the only, damaged, copy.
            lost = [
                b.id
                for b in pack.blobs
                if b.id in used
                and damage.is_damaged(pack.id, b.id)
                and intact_elsewhere(b.id, pack.id) is None
            ]
            if lost:
                result.damaged_kept.append(pack.id)
                continue
            if info is None:
                dropped_missing.append(pack.id)  # its entry outlived it; the blobs live elsewhere
            elif used_count:
                repack.append(pack)
            else:
                candidates[pack.id] = pack
            continue
        if info is None:
            # Not listed in step 1. Either a backup wrote it (and indexed it) since, or the entry
            # outlived its pack. A pack is durable before any index file lists it, so it exists
            # now unless it is gone: only then may its entry be dropped.
            if used_count == 0 and not _exists(backend, pack.id):
                dropped_missing.append(pack.id)
            continue
        if pack.pending is not None:
            candidates[pack.id] = pack
        elif info.mtime >= protect_from:
            continue  # may belong to a running backup
        elif used_count == 0:
            candidates[pack.id] = pack
        elif (len(pack.blobs) - used_count) / max(len(pack.blobs), 1) >= repack_unused_fraction:
            repack.append(pack)
    unindexed = [info for pid, info in on_disk.items() if pid not in packs and info.mtime < protect_from]
    stale_temp = [info for info in temp_files if info.mtime < protect_from]
    stale_uploads = [upload for upload in open_uploads if upload.initiated < protect_from]

    # 5b. Repack partly used packs: copy their used blobs (verified, still sealed) into new packs.
    copied: set[bytes] = set()
    for pack in repack:
        if dry_run:
            result.packs_repacked += 1
            result.blobs_repacked += sum(1 for b in pack.blobs if b.id in used)
            candidates[pack.id] = pack
            continue
        try:
            raw = backend.load(pack_name(pack.id))
            copies = []
            for b in pack.blobs:
                if b.id not in used or b.id in copied:
                    continue
                if damage.is_damaged(pack.id, b.id):
                    continue  # an intact copy lives elsewhere (checked in step 5)
                if pack.id in damaged_packs and intact_elsewhere(b.id, pack.id) is not None:
                    continue
                copies.append((b, repo.verified_sealed(pack.id, b, raw)))  # never copy damage forward
        except ShadowvaultError as err:
            log.warning("not repacking pack %s: %s", pack.id[:16], err)
            continue
        for b, sealed in copies:
            repo.copy_sealed_blob(BlobType(b.type), b.id, sealed, b.raw_length, b.compressed)
            copied.add(b.id)
            result.blobs_repacked += 1
            result.bytes_repacked += b.length
        result.packs_repacked += 1 if copies else 0  # nothing copied: the pack is only deleted
        candidates[pack.id] = pack
    if not dry_run:
        already = len(repo.written_index_files)
        repo.flush()  # new packs and their own index file are durable before anything is flagged
        for name in repo.written_index_files[already:]:  # fold them into the one index written below
            for pack in repo.load_index_file(name).packs:
                packs.setdefault(pack.id, pack)
            index_names.append(name)

    def deletable(pack: IndexPack) -> bool:
        """No used blob would be lost: each is unused, copied by this run, or in a kept pack."""
        return all(b.id not in used or b.id in copied or b.id in kept for b in pack.blobs)

    kept = {
        b.id
        for p in packs.values()
        if p.id not in candidates and p.id in on_disk
        for b in p.blobs
        if not damage.is_damaged(p.id, b.id)
    }
    now = time.time()
    if dry_run:
        for pack in candidates.values():
            if deletable(pack) or pack in repack:
                result.packs_deleted += 1
                result.bytes_deleted += on_disk[pack.id].size
        result.unindexed_deleted = len(unindexed)
        result.bytes_deleted += sum(i.size for i in unindexed)
        result.temp_deleted = len(stale_temp)
        result.uploads_aborted = len(stale_uploads)
        return result

    # 6. One index with candidates flagged pending; then the index files read in step 3 go.
    for pack_id in dropped_missing:
        del packs[pack_id]
    new_candidates = set()
    for pack in candidates.values():
        if pack.pending is None:
            pack.pending = Pending(since=now, waits_for=None)
            new_candidates.add(pack.id)
    step6_names = repo.save_index_files(list(packs.values()))
    for name in index_names:
        backend.remove(name)

    # 7. Live sessions S2: backups that may have loaded the index from before step 6.
    s2 = {s.name for s in live_sessions(backend, repo.sealer) if s.name != own}

    # 8. Sweep what no live session can still reference; recheck against snapshots made meanwhile.
    sweepable = []
    for pack in candidates.values():
        assert pack.pending is not None
        earlier = pack.pending.waits_for
        # New candidates (or undecided ones): anyone live now may have loaded an unflagged index.
        waits = s2 if pack.id in new_candidates or earlier is None else set(earlier) & s2
        if waits:
            pack.pending = Pending(since=pack.pending.since, waits_for=sorted(waits))
            result.packs_pending += 1
        else:
            sweepable.append(pack)
    result.waiting_for = sorted(s2) if result.packs_pending else []
    if sweepable:
        fresh = [(sid, snap) for sid, snap in repo.list_snapshots() if sid not in seen_snapshots]
        repo.reload_index()
        mark_used(repo, fresh, used)
    deleted = []
    for pack in sweepable:
        if not deletable(pack):
            pack.pending = None  # referenced after all (a backup reused it): keep it
            result.packs_kept_referenced += 1
        else:
            deleted.append(pack.id)
            del packs[pack.id]
    final = set(repo.save_index_files(list(packs.values())))
    for name in step6_names:
        if name not in final:
            backend.remove(name)
    for pack_id in deleted:
        result.bytes_deleted += on_disk[pack_id].size
        backend.remove(pack_name(pack_id))
        result.packs_deleted += 1
    for info in unindexed:
        backend.remove(info.name)
        result.bytes_deleted += info.size
        result.unindexed_deleted += 1
    for info in stale_temp:
        backend.remove(info.name)
        result.temp_deleted += 1
    result.uploads_aborted = abort_uploads(backend, stale_uploads)
    for session in dead_sessions:  # killed or hung writers; a hung one will refuse to commit
        backend.remove(session.name)
        result.sessions_removed += 1
    if damage.files and deleted + dropped_missing:  # records of packs that are gone go with them
        replace_damage(backend, repo.sealer, damage, keep=packs)
    return result


def _intact_copies(
    packs: dict[str, IndexPack], on_disk: dict[str, FileInfo], damage: DamageMap
) -> Callable[[bytes, str], str | None]:
    """A function: (blob id, pack to ignore) -> a pack on disk holding an intact copy, or None."""
    holders: dict[bytes, list[str]] = {}
    for pack_id in damage.packs():
        pack = packs.get(pack_id)
        for b in pack.blobs if pack else ():
            holders[b.id] = []
    for pack in packs.values():
        if pack.id not in on_disk or pack.pending is not None:
            continue
        for b in pack.blobs:
            found = holders.get(b.id)
            if found is not None and not damage.is_damaged(pack.id, b.id):
                found.append(pack.id)

    def intact_elsewhere(blob_id: bytes, pack_id: str) -> str | None:
        return next((p for p in holders.get(blob_id, ()) if p != pack_id), None)

    return intact_elsewhere
