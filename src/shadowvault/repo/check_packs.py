"""The packs as check sees them: what the index files list of each (taken while the index is built
from them), and a pack read whole and verified against its name, its header and the index
(`check --read-data`)."""

from __future__ import annotations

from array import array
from typing import NamedTuple

import blake3

from shadowvault.errors import IntegrityError, ShadowvaultError
from shadowvault.repo.check_report import CheckReport
from shadowvault.repo.damage import DamagedPack, DamageMap
from shadowvault.repo.format import IndexPack
from shadowvault.repo.pack import pack_name, parse_header
from shadowvault.repo.repository import Repository


class Listed(NamedTuple):
    """What check keeps of a pack's index entry."""

    size: int
    pending: bool
    blobs: int  # how many


class IndexListing:
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

    def packs(self) -> dict[str, Listed]:
        """Pack id -> what is listed: the first listing wins, unless a later one says pending."""
        listed: dict[str, Listed] = {}
        for n, size in enumerate(self._sizes):
            pack_id = self._ids[n * 32 : (n + 1) * 32].hex()
            if pack_id not in listed or self._pending[n]:
                listed[pack_id] = Listed(size, bool(self._pending[n]), self._counts[n])
        return listed


def read_pack(repo: Repository, pack: IndexPack, report: CheckReport, found: DamageMap) -> bool:
    """Read one pack whole: its name is its BLAKE3 hash, its header matches the index, every blob
    verifies. True when all of that holds. A pack damaged outside its blobs (its header, its
    trailer) is recorded too, though every copy in it verifies: a lost index file could not be
    rebuilt from its header, so `repair packs` rewrites it."""
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
    outside = _header_problems(repo, pack, raw, report)
    blobs_damaged = _verify_blobs(repo, pack, raw, report, found)
    if len(report.errors) > errors and not blobs_damaged:  # the damage lies outside the blobs
        reason = outside or f"{what} is damaged: its content does not match its name"
        found.add(DamagedPack(id=pack.id, reason=reason))
    return len(report.errors) == errors


def _header_problems(repo: Repository, pack: IndexPack, raw: bytes, report: CheckReport) -> str | None:
    """Report where the pack's own header is unreadable or disagrees with the index; the first
    problem, or None."""
    what = f"pack {pack.id[:16]}"
    try:
        header = {b.id: b for b in parse_header(repo.sealer, raw, len(raw), what)}
    except ShadowvaultError as err:
        report.errors.append(f"{what}: {err}")
        return f"{what} has an unreadable header: {err}"
    first = None
    for b in pack.blobs:
        h = header.get(b.id)
        if h is None or (h.offset, h.length, h.raw_length, h.compressed) != (
            b.offset,
            b.length,
            b.raw_length,
            b.compressed,
        ):
            report.errors.append(f"{what}: header and index disagree about blob {b.id.hex()[:16]}")
            first = first or f"{what}: header and index disagree about blob {b.id.hex()[:16]}"
    return first


def _verify_blobs(
    repo: Repository, pack: IndexPack, raw: bytes, report: CheckReport, found: DamageMap
) -> int:
    """Verify every blob the index places in the pack, recording each that fails; how many failed."""
    what = f"pack {pack.id[:16]}"
    failed = 0
    for b in pack.blobs:
        try:
            repo.verified_sealed(pack.id, b, raw)
            report.blobs_verified += 1
        except ShadowvaultError as err:
            problem = f"blob {b.id.hex()[:16]} in {what} is damaged: {err}"
            found.add(DamagedPack(id=pack.id, reason=problem, blobs=[b.id]))
            report.errors.append(problem)
            failed += 1
    return failed
