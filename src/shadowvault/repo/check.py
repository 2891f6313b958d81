"""Check: is every snapshot restorable? Finds missing, damaged and unreferenced data, and names the
snapshots each problem affects."""

from __future__ import annotations

import logging
import random
from array import array
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import NamedTuple

import blake3

from shadowvault.errors import IntegrityError, NotFoundError, ShadowvaultError
from shadowvault.repo.damage import DamagedPack, DamageMap
from shadowvault.repo.format import IndexPack
from shadowvault.repo.index import BlobIndex
from shadowvault.repo.pack import pack_name, parse_header
from shadowvault.repo.prune import REPACK_UNUSED_FRACTION
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Tree, invalid_name, names_are_safe
from shadowvault.repo.walk import mark_used

log = logging.getLogger(__name__)


class _Listed(NamedTuple):
    """What check keeps of a pack's index entry."""

    size: int
    pending: bool
    blobs: int  # how many


class _IndexListing:
    """What the index files list of each pack, taken while the index is built from them (one
    decoding of every file, not two). Kept in flat arrays until the files are read: a small object
    kept from the middle of a decoded file pins its allocator arena (index.py, `from_packs`).
    With `keep_entries`, every entry whole (for reading the data: ~145 B per blob)."""

    def __init__(self, keep_entries: bool) -> None:
        self._ids = bytearray()
        self._sizes = array("Q")
        self._counts = array("Q")
        self._pending = bytearray()
        self.entries: dict[str, IndexPack] | None = {} if keep_entries else None
        self.unreadable_files: list[tuple[str, IntegrityError]] = []

    def pack(self, pack: IndexPack) -> None:
        self._ids += bytes.fromhex(pack.id)  # the index took it: a valid id
        self._sizes.append(pack.size)
        self._counts.append(len(pack.blobs))
        self._pending.append(pack.pending is not None)
        if self.entries is not None and (pack.id not in self.entries or pack.pending is not None):
            self.entries[pack.id] = pack

    def unreadable(self, name: str, err: IntegrityError) -> None:
        self.unreadable_files.append((name, err))

    def packs(self) -> dict[str, _Listed]:
        """Pack id -> what is listed: the first listing wins, unless a later one says pending."""
        listed: dict[str, _Listed] = {}
        for n, size in enumerate(self._sizes):
            pack_id = self._ids[n * 32 : (n + 1) * 32].hex()
            if pack_id not in listed or self._pending[n]:
                listed[pack_id] = _Listed(size, bool(self._pending[n]), self._counts[n])
        return listed


class _UsedBlobs:
    """The blobs the snapshots reference, as one bit per entry of the compact index (ids the index
    does not hold in a set of their own, `unindexed`): a set of a million ids cost ~90 MB."""

    def __init__(self, index: BlobIndex) -> None:
        self._index = index
        self._bits = bytearray((index.bulk_size + 7) // 8)
        self.unindexed: set[bytes] = set()

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
        for blob_id, at in zip(blob_ids, self._index.slots(blob_ids), strict=True):
            if at is None:
                self.unindexed.add(blob_id)
            else:
                bits[at >> 3] |= 1 << (at & 7)


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    packs_read: int = 0
    blobs_verified: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    affected_snapshots: dict[str, list[str]] = field(default_factory=dict)  # id -> problems
    unreferenced_blobs: int = 0
    unindexed_packs: int = 0
    pending_packs: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.ok:
            return f"no errors: {self.snapshots} snapshots, {self.packs} packs, {self.blobs} blobs" + (
                f", {self.blobs_verified} blobs read and verified" if self.packs_read else ""
            )
        affected = ", ".join(sid[:8] for sid in sorted(self.affected_snapshots)) or "none"
        return f"{len(self.errors)} errors found; affected snapshots: {affected}"


def check(
    repo: Repository,
    *,
    read_data_fraction: float = 0.0,
    read_data_group: tuple[int, int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    record: bool = True,
) -> CheckReport:
    """Check structure always; read and verify `read_data_fraction` (0..1) of the packs chosen at
    random, or group n of t (`read_data_group=(n, t)`, by pack id, so t runs cover every pack).

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
    reading = read_data_fraction > 0 or read_data_group is not None
    listing = _IndexListing(keep_entries=reading)
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
            " or their index file was lost: `shadowvault repair index` adds them; prune removes them)"
        )

    # Read data.
    intact: set[str] = set()  # packs read whole, every byte as the index says
    if reading:
        readable = sorted(pid for pid in packs if pid in on_disk and pid not in found.whole)
        if read_data_group is not None:
            n, t = read_data_group
            readable = [pid for pid in readable if int(pid[:8], 16) % t == n - 1]
        elif read_data_fraction < 1:
            count = max(1, round(len(readable) * read_data_fraction)) if readable else 0
            readable = sorted(random.sample(readable, count))
        for n, pack_id in enumerate(readable):
            if progress:
                progress("read data", n, len(readable))
            if _read_pack(repo, entries[pack_id], report, found):
                intact.add(pack_id)
            report.packs_read += 1

    # Damage recorded by earlier checks and reads, for packs still indexed.
    mended: list[str] = []
    for earlier in repo.damage.records(keep=packs):
        if earlier.id in found.whole:
            continue  # found again by this run
        if earlier.id in intact:
            mended.append(earlier.id)  # read back whole and intact: a good copy was put back
            continue
        blobs = [b for b in earlier.blobs if not found.is_damaged(earlier.id, b)]
        if not earlier.whole and not blobs:
            continue
        what = "is damaged" if earlier.whole else f"has {len(blobs)} damaged blobs"
        report.errors.append(
            f"pack {earlier.id[:16]} {what} (recorded earlier: {earlier.reason}); `shadowvault repair"
            " packs` salvages what is readable (a good copy of the file put back: `check --read-data`"
            " clears the record)"
        )
    if record and found:
        _record(repo, report, found.records())
    if mended:
        _clear(repo, report, mended, record)

    bad_blobs = _without_intact_copy(repo, packs, found, report)

    # The trees the snapshots reference.
    report.snapshots = len(snapshots)
    used = _UsedBlobs(repo.index)
    tree_problems: dict[bytes, str] = {}

    def tree_error(snapshot_id: str, tree_id: bytes, err: ShadowvaultError) -> None:
        tree_problems.setdefault(tree_id, f"tree {tree_id.hex()[:16]} cannot be read: {err}")

    for n, (sid, snap) in enumerate(snapshots):
        if progress:
            progress("snapshots", n, len(snapshots))
        mark_used(repo, [(sid, snap)], used, on_error=tree_error, on_tree=_name_checker(report))
    met = repo.damage.take_unsaved()  # trees that failed to load while walking
    if record and met:
        _record(repo, report, met)
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
    if bad_blobs or tree_problems:
        _attribute(repo, snapshots, {**bad_blobs, **tree_problems}, report)
    if report.affected_snapshots:
        report.warnings.append(
            "`shadowvault repair snapshots` writes copies of the affected snapshots without what was lost"
        )
    return report


def _without_intact_copy(
    repo: Repository, packs: dict[str, _Listed], found: DamageMap, report: CheckReport
) -> dict[bytes, str]:
    """Blob id -> what is wrong, for the blobs whose every indexed copy is damaged (by this run's
    findings or earlier records); a damaged copy with an intact one elsewhere is only a warning.
    The blobs of the damaged packs are looked at, each copy found through the compact index (a
    map of every blob to its packs cost ~110 B per blob)."""

    def damaged(pack_id: str, blob_id: bytes) -> bool:
        return found.is_damaged(pack_id, blob_id) or repo.damage.is_damaged(pack_id, blob_id)

    suspects: dict[bytes, list[str]] = {}  # blob id -> the packs with a damaged copy
    with_damage = (found.packs() | repo.damage.packs()) & packs.keys()
    for pack_id, blob_ids in repo.index.blobs_in(with_damage).items():
        for blob_id in dict.fromkeys(blob_ids):  # a pack listed twice lists its blobs twice
            if damaged(pack_id, blob_id):
                suspects.setdefault(blob_id, []).append(pack_id)
    bad: dict[bytes, str] = {}
    superseded = 0
    for blob_id, broken_in in suspects.items():
        indexed = [loc.pack for loc in repo.index.locations(blob_id) if loc.pack in packs]
        holders = list(dict.fromkeys([*indexed, *broken_in]))
        broken = [p for p in holders if damaged(p, blob_id)]
        if len(broken) == len(holders):
            reason = found.whole.get(broken[0]) or found.copies.get(blob_id, {}).get(broken[0])
            bad[blob_id] = reason or f"blob {blob_id.hex()[:16]} is damaged in pack {broken[0][:16]}"
        else:
            superseded += 1
    if superseded:
        report.warnings.append(
            f"{superseded} damaged blob copies have intact copies elsewhere (a later backup stored them"
            " again); `shadowvault repair packs` or prune removes the damaged packs"
        )
    return bad


def _freed_by_prune(packs: dict[str, _Listed], unused_in: Counter[str]) -> int:
    """Unreferenced blobs in the packs prune deletes or repacks (pending, unused, or enough unused).
    `unused_in` counts them per pack (looking up every blob of every pack again cost a check of a
    million blobs 1.5 s)."""
    freeable = 0
    for pack_id, listed in packs.items():
        unused = unused_in[pack_id]
        if unused and (listed.pending or unused / max(listed.blobs, 1) >= REPACK_UNUSED_FRACTION):
            freeable += unused
    return freeable


def _record(repo: Repository, report: CheckReport, records: list[DamagedPack]) -> None:
    """Save what was found for backups and prune; a read-only repository only loses the memo."""
    try:
        repo.record_damage(records)
    except ShadowvaultError as err:
        report.warnings.append(f"could not record the damage found ({err}); backups may reuse it")


def _clear(repo: Repository, report: CheckReport, mended: list[str], record: bool) -> None:
    """Forget the damage recorded for packs this run read back intact (in the repository too,
    with `record`), so that backups and prune use their blobs again."""
    shown = ", ".join(pack_id[:16] for pack_id in mended[:5]) + (" ..." if len(mended) > 5 else "")
    if not record:
        repo.damage.forget(mended)
        report.warnings.append(f"packs recorded as damaged read back intact: {shown}")
        return
    try:
        repo.clear_damage(mended)
    except ShadowvaultError as err:
        report.warnings.append(f"packs recorded as damaged read back intact ({shown}); recorded still: {err}")
        return
    report.warnings.append(f"packs recorded as damaged read back intact, their records cleared: {shown}")


def _name_checker(report: CheckReport) -> Callable[[bytes, Tree], None]:
    """Report tree entries whose names a restore refuses (path separators, "..", duplicates)."""

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
                report.errors.append(
                    f"tree {tree_id.hex()[:16]} has an entry with an unsafe name {node.name!r}: {why}"
                    " (a restore skips it)"
                )

    return check_names


def _read_pack(repo: Repository, pack: IndexPack, report: CheckReport, found: DamageMap) -> bool:
    """Read one pack whole: its name is its BLAKE3 hash, its header matches the index, every blob
    verifies. True when all of that holds."""
    what = f"pack {pack.id[:16]}"
    errors = len(report.errors)
    try:
        raw = repo.backend.load(pack_name(pack.id))
    except ShadowvaultError as err:
        report.errors.append(f"{what}: {err}")
        found.add(DamagedPack(id=pack.id, reason=f"{what} cannot be read", whole=True))
        return False
    if blake3.blake3(raw, max_threads=1).hexdigest() != pack.id:
        report.errors.append(f"{what} is damaged: its content does not match its name")
    try:
        header = {b.id: b for b in parse_header(repo.sealer, raw, len(raw), what)}
    except ShadowvaultError as err:
        report.errors.append(f"{what}: {err}")
        header = None
    for b in pack.blobs:
        if header is not None:
            h = header.get(b.id)
            if h is None or (h.offset, h.length, h.raw_length, h.compressed) != (
                b.offset,
                b.length,
                b.raw_length,
                b.compressed,
            ):
                report.errors.append(f"{what}: header and index disagree about blob {b.id.hex()[:16]}")
        try:
            repo.verified_sealed(pack.id, b, raw)
            report.blobs_verified += 1
        except ShadowvaultError as err:
            problem = f"blob {b.id.hex()[:16]} in {what} is damaged: {err}"
            found.add(DamagedPack(id=pack.id, reason=problem, blobs=[b.id]))
            report.errors.append(problem)
    return len(report.errors) == errors


def _attribute(
    repo: Repository, snapshots: list[tuple[str, Snapshot]], bad: dict[bytes, str], report: CheckReport
) -> None:
    """Name the snapshots that reference a bad blob (each tree's verdict is computed once)."""
    verdict: dict[bytes, list[str]] = {}  # tree id -> problems below it (capped)

    def problems_of(root: bytes) -> list[str]:
        stack: list[tuple[bytes, bool]] = [(root, False)]
        children: dict[bytes, tuple[list[str], list[bytes]]] = {}
        while stack:
            tree_id, expanded = stack.pop()
            if tree_id in verdict:
                continue
            if not expanded:
                if tree_id in bad:
                    verdict[tree_id] = [bad[tree_id]]
                    continue
                try:
                    tree = repo.load_tree(tree_id)
                except ShadowvaultError as err:
                    verdict[tree_id] = [f"tree {tree_id.hex()[:16]} cannot be read: {err}"]
                    continue
                own = [bad[c] for node in tree.nodes for c in node.content if c in bad]
                subs = [node.subtree for node in tree.nodes if node.subtree is not None]
                children[tree_id] = (own, subs)
                stack.append((tree_id, True))
                stack.extend((s, False) for s in subs if s not in verdict)
            else:
                own, subs = children.pop(tree_id)
                found = list(own)
                for s in subs:
                    found.extend(verdict.get(s, []))
                verdict[tree_id] = list(dict.fromkeys(found))[:20]
        return verdict[root]

    for sid, snap in snapshots:
        found = problems_of(snap.tree) if snap.tree else []
        if snap.manifest and snap.manifest in bad:
            found = [*found, bad[snap.manifest]]
        if found:
            report.affected_snapshots.setdefault(sid, []).extend(found)
