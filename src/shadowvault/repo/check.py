"""Check: is every snapshot restorable? Finds missing, damaged and unreferenced data, and names the
snapshots each problem affects.

This is the driver, its steps in order (the snapshots before the index files, so that a snapshot
saved meanwhile finds its blobs indexed); the packs are listed and read in check_packs.py, the
damage found is judged and attributed in check_damage.py, and it all goes into check_report.py."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Collection

from shadowvault.display import display_component
from shadowvault.errors import NotFoundError, ShadowvaultError
from shadowvault.repo.check_damage import (
    attribute_to_snapshots,
    clear_mended,
    record_found,
    recorded_earlier,
    without_intact_copy,
)
from shadowvault.repo.check_packs import IndexListing, Listed, read_pack
from shadowvault.repo.check_report import CheckReport
from shadowvault.repo.check_sizes import SizeChecker, tree_problem, where_found
from shadowvault.repo.damage import DamagedPack, DamageMap
from shadowvault.repo.index import BlobIndex
from shadowvault.repo.keys import damaged_keys, stray_key_files
from shadowvault.repo.prune import REPACK_UNUSED_FRACTION
from shadowvault.repo.repair_snapshots import repaired_originals, way_out
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.snapshots import stray_snapshot_files
from shadowvault.repo.tree import Tree, invalid_name, names_are_safe
from shadowvault.repo.unindexed_packs import look_in_unindexed
from shadowvault.repo.walk import mark_used

log = logging.getLogger(__name__)


class _UsedBlobs:
    """The blobs the snapshots reference, as one bit per entry of the compact index (ids the index
    does not hold in a set of their own, `unindexed`): a set of a million ids cost ~90 MB."""

    def __init__(self, index: BlobIndex) -> None:
        self._index = index
        self._bits = bytearray((index.bulk_size + 7) // 8)
        self.unindexed: set[bytes] = set()
        # the slots of the ids the last `update` was given, in order: a tree's content, which
        # check's size test reads (check_sizes.py) instead of looking each blob up again
        self.last_slots: list[int | None] = []

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes):
            return False
        at = self._index.slot(blob_id)
        return blob_id in self.unindexed if at is None else self._marked(at)

    def has_at(self, blob_id: bytes, slot: int | None) -> bool:
        """`blob_id in self` for a blob whose slot is known (None: look it up)."""
        return blob_id in self if slot is None else self._marked(slot)

    def _marked(self, slot: int) -> bool:
        return bool(self._bits[slot >> 3] & (1 << (slot & 7)))

    def add(self, blob_id: bytes) -> None:
        self.update((blob_id,))

    def update(self, blob_ids: Collection[bytes]) -> None:
        bits = self._bits
        self.last_slots = slots = self._index.slots(blob_ids)
        for blob_id, at in zip(blob_ids, slots, strict=True):
            if at is None:
                self.unindexed.add(blob_id)
            else:
                bits[at >> 3] |= 1 << (at & 7)


def check(
    repo: Repository,
    *,
    read_data_fraction: float = 0.0,
    read_data_group: tuple[int, int] | None = None,
    read_data_bytes: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    record: bool = True,
) -> CheckReport:
    """Check structure always; read and verify `read_data_fraction` (0..1) of the packs chosen at
    random, or group n of t (`read_data_group=(n, t)`, by pack id, so t runs cover every pack), or
    packs at random making about `read_data_bytes` (restic's `--read-data-subset 1G`: that share of
    the packs' total size, at least one pack).

    Damage is judged per copy: a blob is lost only when every indexed copy of it is damaged. New
    damage is recorded in the repository (`record`), so the next backup stores those blobs again
    and prune never counts on them (repo/damage.py)."""
    report = CheckReport()
    backend = repo.backend
    shown = backend.exposed_to_others()
    if shown:
        report.warnings.append(
            f"other users can read parts of this repository: {', '.join(shown[:5])}"
            f"{' ...' if len(shown) > 5 else ''}; run `chmod -R go-rwx {backend.describe()}`"
        )
    for name in damaged_keys(backend):
        key_id = name.rsplit("/", 1)[1]  # whole: a prefix another key shares would not name it
        report.errors.append(
            f"key file {name} is damaged (its content does not match its name): its password no longer"
            f" opens the repository; `shadowvault key remove {key_id}`, then `key add` for that password"
        )
    strays = [(name, "a key file (key files are keys/<64 hex digits>)") for name in stray_key_files(backend)]
    strays += [
        (name, "a snapshot file (snapshot files are right under snapshots/)")
        for name in stray_snapshot_files(backend)
    ]
    for name, what in strays:
        report.warnings.append(
            f"{name} is not {what}: no command reads it or can remove it; delete it from"
            f" {backend.describe()} yourself"
        )
    # Snapshots, then the index files (a backup saves its index files before its snapshot, so
    # every listed snapshot's blobs are in them), read once: into the index the trees are walked
    # with, and, of each pack, what is checked against the packs themselves
    snapshots: list[tuple[str, Snapshot]] = []
    for sid in repo.snapshot_ids():
        try:
            snapshots.append((sid, repo.load_snapshot(sid)))
        except NotFoundError:
            continue  # forgotten while we listed
        except ShadowvaultError as err:
            report.errors.append(f"{err}; remove it with `shadowvault forget {sid[:8]}`")
            report.affected_snapshots.setdefault(sid, []).append(str(err))
    reading = read_data_fraction > 0 or read_data_group is not None or bool(read_data_bytes)
    listing = IndexListing(keep_entries=reading)
    # check runs on one thread: never two indexes at once; and it reads every index file, never
    # the index kept built from them (index_cache.py)
    repo.reload_index(drop_old=True, kept=False, observer=listing)
    for name, why in listing.unreadable_files:
        report.errors.append(f"index file {name}: {why} (run `shadowvault repair index`)")
    packs = listing.packs()
    entries = listing.entries or {}
    on_disk = {info.name.rsplit("/", 1)[1]: info for info in backend.list("data/")}
    report.packs = len(packs)
    found = DamageMap()  # damage this run found
    for pack_id, listed in packs.items():
        if listed.pending:
            report.pending_packs += 1
        info = on_disk.get(pack_id)
        problem = None
        if info is None:
            problem = f"pack {pack_id[:16]} is missing"
        elif info.size != listed.size:
            problem = f"pack {pack_id[:16]} has {info.size} bytes, the index says {listed.size}"
        if problem:
            report.errors.append(problem)
            found.add(DamagedPack(id=pack_id, reason=problem, whole=True))
    unindexed = [pid for pid in on_disk if pid not in packs]
    report.unindexed_packs = len(unindexed)
    if unindexed:
        report.warnings.append(
            f"{len(unindexed)} packs are not in the index (left by an interrupted or running backup,"
            " or their index file was lost: `shadowvault repair index` adds those whose header is readable;"
            " prune removes them)"
        )

    # Read data.
    intact: set[str] = set()  # packs read whole, every byte as the index says
    if reading:
        readable = sorted(pid for pid in packs if pid in on_disk and pid not in found.whole)
        if read_data_group is not None:
            n, t = read_data_group
            readable = [pid for pid in readable if int(pid[:8], 16) % t == n - 1]
        else:
            if read_data_bytes:
                total = sum(packs[pid].size for pid in readable)
                read_data_fraction = min(1.0, read_data_bytes / total) if total else 1.0
            if read_data_fraction < 1:
                count = max(1, round(len(readable) * read_data_fraction)) if readable else 0
                readable = sorted(random.sample(readable, count))
        for n, pack_id in enumerate(readable):
            if progress:
                progress("read data", n, len(readable))
            if read_pack(repo, entries[pack_id], report, found):
                intact.add(pack_id)
            report.packs_read += 1

    # Damage recorded by earlier checks and reads, for packs still indexed.
    mended = recorded_earlier(repo, packs, found, intact, report)
    if record and found:
        record_found(repo, report, found.records())
    if mended:
        clear_mended(repo, report, mended, record)

    bad_blobs = without_intact_copy(repo, packs, found, report)

    # The trees the snapshots reference.
    report.snapshots = len(snapshots)
    used = _UsedBlobs(repo.index)
    tree_problems: dict[bytes, str] = {}

    def tree_error(snapshot_id: str, tree_id: bytes, err: ShadowvaultError) -> None:
        tree_problems.setdefault(tree_id, f"tree {tree_id.hex()[:16]} cannot be read: {err}")

    unsafe_trees: dict[bytes, str] = {}
    check_names = _name_checker(report, unsafe_trees)
    sizes = SizeChecker(repo.index, repo.blob_size)

    def check_tree(tree_id: bytes, tree: Tree) -> None:
        check_names(tree_id, tree)
        sizes.check(tree_id, tree, used.last_slots)  # mark_used has just marked its content

    for n, (sid, snap) in enumerate(snapshots):
        if progress:
            progress("snapshots", n, len(snapshots))
        mark_used(repo, [(sid, snap)], used, on_error=tree_error, on_tree=check_tree)
    met = repo.damage.take_unsaved()  # trees that failed to load while walking
    if record and met:
        record_found(repo, report, met)
    for blob_id in used.unindexed:
        if (
            blob_id not in bad_blobs and blob_id not in tree_problems and repo.lookup(blob_id) is None
        ):  # not indexed (the index was read again after the snapshots)
            bad_blobs[blob_id] = f"blob {blob_id.hex()[:16]} is missing (not in the index)"
            report.errors.append(bad_blobs[blob_id])
    for tree_id, problem in tree_problems.items():
        if tree_id not in bad_blobs:
            report.errors.append(problem)
    unused_in: Counter[str] = Counter()  # pack id -> its blobs no snapshot references
    for blob_id, slot in repo.index.slotted_blob_ids():  # each once: no set of them all
        report.blobs += 1
        if not used.has_at(blob_id, slot):
            report.unreferenced_blobs += 1
            unused_in.update({location.pack for location in repo.index.locations(blob_id)})
    freeable = _freed_by_prune(packs, unused_in)
    if freeable:  # those prune leaves in mostly used packs are counted, not warned about
        report.warnings.append(
            f"{freeable} blobs are not referenced by any snapshot; `shadowvault prune` removes them"
        )
    if sizes.found:
        report.errors += where_found(repo, snapshots, sizes.found)
    flagged = {**{t: tree_problem(t, found) for t, found in sizes.found.items()}, **unsafe_trees}
    if bad_blobs or tree_problems or flagged:
        attribute_to_snapshots(repo, snapshots, {**bad_blobs, **tree_problems}, report, flagged)
    index_lost = bool(listing.unreadable_files) or _unindexed_hold(
        repo, unindexed, {**bad_blobs, **tree_problems}, report
    )
    packs_damaged = bool((found.packs() | repo.damage.packs()) & packs.keys())
    report.warnings += closing_advice(
        index_lost, bool(bad_blobs or tree_problems), bool(unsafe_trees), packs_damaged
    )
    copied = repaired_originals(snapshots)
    if report.affected_snapshots and not index_lost and set(report.affected_snapshots) <= copied:
        report.warnings.append(  # `repair snapshots` again would only write another copy
            f"every affected snapshot has a repaired copy: {way_out(snapshots, report.affected_snapshots)},"
            " then `shadowvault prune`"
        )
    return report


def _unindexed_hold(
    repo: Repository, unindexed: list[str], lost: dict[bytes, str], report: CheckReport
) -> bool:
    """Whether packs no index lists hold blobs the snapshots miss (by their own headers): then
    `repair index` comes first. One whose header is unreadable is damaged for good: reported, as
    no repair can index it (advising `repair index` for it sent the user round in a loop)."""
    if not unindexed or not lost:
        return False
    look = look_in_unindexed(repo, unindexed, lost.keys())
    for pack_id in look.unreadable:
        report.errors.append(
            f"pack {pack_id[:16]} is not in the index and its header cannot be read: no repair can index"
            " its blobs (prune removes it once no snapshot uses what is lost)"
        )
    return bool(look.holding)


def closing_advice(
    index_lost: bool, data_lost: bool, unsafe_names: bool, packs_damaged: bool = False
) -> list[str]:
    """What to do next, for the kinds of damage found (docs/repository.md, "Damage and repair"): the index
    first, as `repair snapshots` judges by it and would drop data that is only unindexed; damaged
    packs whose blobs all still have a usable copy need `repair packs` alone."""
    advice = []
    if index_lost:
        advice.append(
            "index files are damaged or packs are missing from the index: run `shadowvault repair index`,"
            " then `shadowvault check` again, before any other repair"
        )
    elif data_lost:
        advice.append(
            "`shadowvault repair packs` salvages what is readable, then `shadowvault repair snapshots`"
            " writes copies of the affected snapshots without what was lost"
        )
    elif packs_damaged:
        advice.append(
            "`shadowvault repair packs` copies the damaged packs' readable blobs into new packs and"
            " deletes the damaged ones (no snapshot lost data)"
        )
    if unsafe_names:
        advice.append(
            "entries with unsafe names come from a crafted or broken client (a restore skips them):"
            " `shadowvault forget` the affected snapshots unless you trust who wrote them"
        )
    return advice


def _freed_by_prune(packs: dict[str, Listed], unused_in: Counter[str]) -> int:
    """Unreferenced blobs in the packs prune deletes or repacks (pending, unused, or enough unused).
    `unused_in` counts them per pack (looking up every blob of every pack again cost a check of a
    million blobs 1.5 s)."""
    freeable = 0
    for pack_id, listed in packs.items():
        unused = unused_in[pack_id]
        if unused and (listed.pending or unused / max(listed.blobs, 1) >= REPACK_UNUSED_FRACTION):
            freeable += unused
    return freeable


def _name_checker(report: CheckReport, unsafe_trees: dict[bytes, str]) -> Callable[[bytes, Tree], None]:
    """Report tree entries whose names a restore refuses (path separators, "..", duplicates), and
    keep their trees for naming the snapshots that hold them."""

    def check_names(tree_id: bytes, tree: Tree) -> None:
        names = [node.name for node in tree.nodes]
        if names_are_safe(names):  # the usual case, judged without a call per name
            return
        seen: set[bytes] = set()
        for node in tree.nodes:
            why = invalid_name(node.name)
            if why is None and node.name in seen:
                why = "a duplicate name"
            seen.add(node.name)
            if why is not None:
                shown = display_component(node.name)
                problem = f"tree {tree_id.hex()[:16]} has an entry with an unsafe name '{shown}': {why}"
                report.errors.append(f"{problem} (a restore skips it)")
                unsafe_trees.setdefault(tree_id, problem)

    return check_names
