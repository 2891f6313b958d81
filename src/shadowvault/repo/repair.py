"""Repair: what to do once something is already damaged (docs/repository.md, "Damage and repair").

- `repair_index` rebuilds the index from the packs' own headers (a lost or damaged index file
  otherwise makes intact packs unreachable, and prune would delete them as leftovers).
- `repair_packs` salvages the readable blobs of damaged packs into new packs, drops the rest from
  the index (so the next backup stores them again), and deletes the damaged packs.
- `repair_snapshots` (repo/repair_snapshots.py) writes copies of snapshots that reference
  unreadable data, with what was lost marked in the tree; the originals stay unless asked to.

Each runs in a "repair" session: never beside a prune or another repair, safe beside backups
(index files are replaced successor first, and only the files read are removed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from shadowvault.display import counted
from shadowvault.errors import NotFoundError, RepositoryError, ShadowvaultError, UsageError
from shadowvault.repo.damage import DamagedPack, replace_damage
from shadowvault.repo.format import BlobType, IndexPack, PackBlob
from shadowvault.repo.pack import pack_name, parse_header, read_header
from shadowvault.repo.repository import Repository
from shadowvault.repo.session import list_sessions, refuse_concurrent_maintenance

log = logging.getLogger(__name__)


def start_repair(repo: Repository, what: str) -> None:
    """Refuse unless `repo` is open in a "repair" session with no prune or other repair beside it."""
    if repo.session is None or repo.session.doc.kind != "repair":
        raise RepositoryError(f"{what} needs the repository opened for writing (kind 'repair')")
    others = [s for s in list_sessions(repo.backend, repo.sealer) if s.name != repo.session.name]
    refuse_concurrent_maintenance(others, what)


def _read_index(repo: Repository) -> tuple[list[str], dict[str, IndexPack], list[str]]:
    """(index files listed, entries of the readable ones by pack, unreadable files)."""
    names = repo.index_files()
    packs: dict[str, IndexPack] = {}
    unreadable: list[str] = []
    for name in names:
        try:
            for pack in repo.load_index_file(name).packs:
                packs.setdefault(pack.id, pack)
        except NotFoundError:
            continue
        except ShadowvaultError as err:
            log.warning("%s: %s", name, err)
            unreadable.append(name)
    return names, packs, unreadable


def _replace_index(repo: Repository, old_names: list[str], packs: list[IndexPack]) -> list[str]:
    """Write `packs` as new index files, then remove the files read (the successor comes first)."""
    written = repo.save_index_files(packs)
    for name in old_names:
        if name not in written:
            repo.backend.remove(name)
    return written


# ---------------------------------------------------------------------------------------- index


@dataclass
class RepairIndexResult:
    packs: int = 0
    packs_read: int = 0  # headers read (packs the index did not know, or all with read_all_packs)
    packs_added: int = 0  # packs that had no (valid) index entry
    entries_dropped: int = 0  # entries of packs that no longer exist
    unreadable_index_files: list[str] = field(default_factory=list)
    # header unreadable, no index entry: nothing can index their blobs (left for prune)
    unreadable_packs: list[str] = field(default_factory=list)
    # header unreadable, described by an index file: entries kept, recorded damaged for `repair packs`
    damaged_packs: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"indexed {counted(self.packs, 'pack')}: {self.packs_added} added from their headers,"
            f" {self.entries_dropped} entries of missing packs dropped"
        )
        if self.unreadable_index_files:
            text += f", {len(self.unreadable_index_files)} unreadable index files replaced"
        if self.damaged_packs:
            text += (
                f"; {counted(len(self.damaged_packs), 'pack')} with an unreadable header kept"
                " their index entries and were recorded as damaged: run `shadowvault repair packs`"
                " next (it salvages their readable blobs)"
            )
        if self.unreadable_packs:
            text += (
                f"; {counted(len(self.unreadable_packs), 'pack')} with an unreadable header and no"
                " index entry could not be indexed: their blobs are lost (after `shadowvault repair"
                " packs`, `shadowvault repair snapshots --forget` writes the affected snapshots"
                " without them; prune then removes those packs)"
            )
        return text


def repair_index(repo: Repository, *, read_all_packs: bool = False) -> RepairIndexResult:
    """Rebuild the index: keep the entries of readable index files whose pack exists with the indexed
    size, read the header of every other pack (of every pack with `read_all_packs`). A pack whose
    header cannot be read keeps the entry an index file gave it, and is recorded as damaged: its
    readable blobs are found by that entry (`repair packs`), and dropping it lost them."""
    start_repair(repo, "repair index")
    result = RepairIndexResult()
    on_disk = {info.name.rsplit("/", 1)[1]: info for info in repo.backend.list("data/")}
    names, known, unreadable = _read_index(repo)
    result.unreadable_index_files = unreadable
    packs: list[IndexPack] = []
    damaged: list[DamagedPack] = []
    for pack_id, info in sorted(on_disk.items()):
        entry = known.get(pack_id)
        if entry is not None and entry.size == info.size and not read_all_packs:
            packs.append(entry)
            continue
        result.packs_read += 1
        try:
            blobs = read_header(repo.backend, repo.sealer, pack_id)
        except NotFoundError:
            continue  # deleted meanwhile (a backup's failed pack; prune is excluded)
        except ShadowvaultError as err:
            log.warning("pack %s: %s", pack_id[:16], err)
            if entry is None:
                result.unreadable_packs.append(pack_id)
                continue
            packs.append(entry)  # its size as indexed: check goes on naming a truncated pack
            damaged.append(_header_damage(pack_id, info.size, entry.size, err))
            result.damaged_packs.append(pack_id)
            continue
        if entry is None or entry.size != info.size:
            result.packs_added += 1
        packs.append(
            IndexPack(id=pack_id, size=info.size, blobs=blobs, pending=entry.pending if entry else None)
        )
    result.entries_dropped = sum(1 for pack_id in known if pack_id not in on_disk)
    result.packs = len(packs)
    _replace_index(repo, names, packs)
    if damaged:
        repo.record_damage(damaged)
    if repo.damage.files:
        replace_damage(repo.backend, repo.sealer, repo.damage, keep=[p.id for p in packs])
    repo.reload_index()
    return result


def _header_damage(pack_id: str, size: int, indexed_size: int, err: ShadowvaultError) -> DamagedPack:
    """The damage record of a pack whose header cannot be read: the whole pack when its size is not
    the indexed one (cut short, or grown), else the file outside its blobs (its blobs may verify)."""
    what = f"pack {pack_id[:16]}"
    if size != indexed_size:
        return DamagedPack(
            id=pack_id, reason=f"{what} has {size} bytes, the index says {indexed_size}", whole=True
        )
    return DamagedPack(id=pack_id, reason=f"{what} has an unreadable header: {err}")


# ---------------------------------------------------------------------------------------- packs


@dataclass
class RepairPacksResult:
    packs: list[str] = field(default_factory=list)  # the packs repaired (and deleted)
    blobs_salvaged: int = 0
    blobs_lost: int = 0  # dropped from the index: the next backup stores them again if it still can

    def summary(self) -> str:
        if not self.packs:
            return "no damaged packs to repair"
        text = (
            f"repaired {counted(len(self.packs), 'pack')}: {self.blobs_salvaged} blobs salvaged,"
            f" {self.blobs_lost} blobs lost"
        )
        if self.blobs_lost:
            text += (
                "; run a backup (it stores again what the sources still have), then"
                " `shadowvault check` and `shadowvault repair snapshots`"
            )
        return text


def repair_packs(repo: Repository, pack_ids: list[str] | None = None) -> RepairPacksResult:
    """Salvage the damaged packs (`pack_ids`, or every pack with recorded damage: run
    `check --read-data` first to find them)."""
    start_repair(repo, "repair packs")
    result = RepairPacksResult()
    names, packs, unreadable = _read_index(repo)
    if unreadable:
        raise RepositoryError(
            f"repair packs refuses to run: {len(unreadable)} index files are unreadable; run"
            " `shadowvault repair index` first"
        )
    if pack_ids:
        targets = []
        for ref in pack_ids:
            matches = [pid for pid in packs if pid.startswith(ref.lower())]
            if len(matches) != 1:
                raise UsageError(f"{ref!r} names {'no' if not matches else 'more than one'} indexed pack")
            targets.append(matches[0])
    else:
        targets = sorted(set(repo.damage.packs()) & packs.keys())
    if not targets:
        if repo.damage.packs() - packs.keys():  # records of packs that are gone
            replace_damage(repo.backend, repo.sealer, repo.damage, keep=packs)
        return result
    chosen = set(targets)
    copied: set[bytes] = set()
    for pack_id in targets:
        salvaged, lost = _salvage(repo, packs[pack_id], chosen, copied)
        result.blobs_salvaged += salvaged
        result.blobs_lost += lost
        result.packs.append(pack_id)
    already = len(repo.written_index_files)
    repo.flush()  # the salvaged blobs' new packs and their index are durable first
    new_files = repo.written_index_files[already:]
    remaining = [p for pid, p in packs.items() if pid not in chosen]
    for name in new_files:
        remaining.extend(repo.load_index_file(name).packs)
    _replace_index(repo, names + new_files, remaining)
    replace_damage(repo.backend, repo.sealer, repo.damage, keep=[p.id for p in remaining])
    for pack_id in targets:
        repo.backend.remove(pack_name(pack_id))
    repo.reload_index()
    return result


def _salvage(repo: Repository, pack: IndexPack, chosen: set[str], copied: set[bytes]) -> tuple[int, int]:
    """Copy the verifiable blobs of `pack` that no intact pack outside `chosen` holds (and that this
    run has not copied yet); returns (salvaged, lost)."""
    try:
        raw = repo.backend.load(pack_name(pack.id))
    except NotFoundError:
        raw = b""
    own = _own_header(repo, pack.id, raw)
    salvaged = lost = 0
    for listed in pack.blobs:
        elsewhere = listed.id in copied or any(
            loc.pack not in chosen and not repo.index.is_damaged(loc, listed.id)
            for loc in repo.index.locations(listed.id)
        )
        found = _verified(repo, pack.id, raw, [listed, *own.get(listed.id, [])])
        if found is None:
            lost += 0 if elsewhere else 1
            continue
        b, sealed = found
        if not elsewhere:
            repo.copy_sealed_blob(BlobType(b.type), b.id, sealed, b.raw_length, b.compressed)
            copied.add(b.id)
            salvaged += 1
    return salvaged, lost


def _own_header(repo: Repository, pack_id: str, raw: bytes) -> dict[bytes, list[PackBlob]]:
    """The entries of the pack's own header by blob id (none when it is unreadable): where the index
    is what lies (an index file crafted or written wrong, the pack intact), the header still finds
    the blobs, and the pack is not deleted with blobs that were never damaged."""
    try:
        entries = parse_header(repo.sealer, raw, len(raw), f"pack {pack_id}")
    except ShadowvaultError:
        return {}
    own: dict[bytes, list[PackBlob]] = {}
    for entry in entries:
        own.setdefault(entry.id, []).append(entry)
    return own


def _verified(
    repo: Repository, pack_id: str, raw: bytes, candidates: list[PackBlob]
) -> tuple[PackBlob, bytes] | None:
    """The first of `candidates` (places of one blob in the pack) whose sealed bytes verify."""
    for candidate in candidates:
        try:
            return candidate, repo.verified_sealed(pack_id, candidate, raw)
        except ShadowvaultError:
            continue
    return None
