"""What is known to be damaged: copies of blobs that failed verification, packs that are missing.

`check` (and any failed read in a writing session) records damage in `damage/<name>` documents.
Every reader loads them with the index, so a backup never deduplicates against a damaged copy (it
stores the blob again: the repository heals), a read prefers an intact copy, and prune never counts
a damaged copy as the one that keeps a blob alive. `repair packs` and prune drop the records of packs
that no longer exist; `check --read-data` those of packs it read back whole and intact (mended by
putting a good copy of the file back). See docs/repository.md, "Damage and repair".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import msgspec

from shadowvault.errors import IntegrityError, NotFoundError
from shadowvault.repo.backend import Backend, load_listed
from shadowvault.repo.format import BlobIdField, PackId, decode_document, encode_document, file_id
from shadowvault.repo.sealing import Sealer

log = logging.getLogger(__name__)

DAMAGE_AAD = b"sv1:damage"
DAMAGE_DIR = "damage/"


REASON_KEPT = 1000  # characters of a reason: what a message shows


class DamagedPack(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One pack's damage: the whole pack (missing, truncated), some of its blob copies, or (not
    whole, no blobs) the file outside its blobs: its header or trailer, so that every copy in it
    verifies but its header cannot index it again, and `repair packs` rewrites it. A record is
    repository input: a pack id that is no pack's name (`../../etc`) or a blob id of another length
    makes the whole file unreadable (ignored with a warning)."""

    id: PackId
    reason: str
    whole: bool = False
    blobs: list[BlobIdField] = []

    def __post_init__(self) -> None:
        self.reason = self.reason[:REASON_KEPT]


class DamageFile(msgspec.Struct, kw_only=True):
    time: float
    packs: list[DamagedPack]


class DamageMap:
    """The union of every damage record, plus what this process found. Thread-safe."""

    def __init__(self) -> None:
        self.whole: dict[str, str] = {}  # pack id -> reason
        self.copies: dict[bytes, dict[str, str]] = {}  # blob id -> {pack id: reason}
        # pack id -> reason, for packs damaged outside their blobs (header, trailer): every copy
        # in them is usable, so they count only as packs to rewrite
        self.headers: dict[str, str] = {}
        self.files: list[str] = []  # the damage/ files this map was read from
        self._unsaved: list[DamagedPack] = []
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.whole or self.copies or self.headers)

    def is_damaged(self, pack_id: str, blob_id: bytes) -> bool:
        return pack_id in self.whole or pack_id in self.copies.get(blob_id, ())

    def packs(self) -> set[str]:
        """Every pack with any recorded damage."""
        found = set(self.whole) | set(self.headers)
        for packs in self.copies.values():
            found.update(packs)
        return found

    def add(self, record: DamagedPack, *, unsaved: bool = False) -> bool:
        """Merge one record; True if it said anything new."""
        new = False
        with self._lock:
            if record.whole and record.id not in self.whole:
                self.whole[record.id] = record.reason
                new = True
            if not record.whole and not record.blobs and record.id not in self.headers:
                self.headers[record.id] = record.reason
                new = True
            for blob_id in record.blobs:
                packs = self.copies.setdefault(blob_id, {})
                if record.id not in packs:
                    packs[record.id] = record.reason
                    new = True
            if new and unsaved:
                self._unsaved.append(record)
        return new

    def records(self, keep: Iterable[str] | None = None) -> list[DamagedPack]:
        """The map as one record per pack (only packs in `keep`, when given)."""
        wanted = None if keep is None else set(keep)
        by_pack: dict[str, DamagedPack] = {}
        for pack_id, reason in self.whole.items():
            by_pack[pack_id] = DamagedPack(id=pack_id, reason=reason, whole=True)
        for blob_id, packs in self.copies.items():
            for pack_id, reason in packs.items():
                record = by_pack.setdefault(pack_id, DamagedPack(id=pack_id, reason=reason))
                if not record.whole:
                    record.blobs.append(blob_id)
        for pack_id, reason in self.headers.items():  # said by a record of its blobs, when there is one
            by_pack.setdefault(pack_id, DamagedPack(id=pack_id, reason=reason))
        return [r for pack_id, r in sorted(by_pack.items()) if wanted is None or pack_id in wanted]

    def forget(self, pack_ids: Iterable[str]) -> None:
        """Drop every record of these packs (they were read back whole and intact)."""
        gone = set(pack_ids)
        with self._lock:
            for pack_id in gone:
                self.whole.pop(pack_id, None)
                self.headers.pop(pack_id, None)
            for blob_id in list(self.copies):
                packs = self.copies[blob_id]
                for pack_id in gone.intersection(packs):
                    del packs[pack_id]
                if not packs:
                    del self.copies[blob_id]

    def take_from(self, other: DamageMap) -> None:
        """Hold what `other` holds (a map read again from the repository), this map's unsaved
        records aside."""
        with self._lock:
            self.whole, self.copies, self.headers = other.whole, other.copies, other.headers
            self.files = other.files

    def take_unsaved(self) -> list[DamagedPack]:
        with self._lock:
            found, self._unsaved = self._unsaved, []
        return found


def load_damage(backend: Backend, sealer: Sealer) -> DamageMap:
    """Every damage record in the repository (an unreadable record is skipped with a warning:
    losing one only means a damaged copy may be tried again)."""
    damage = DamageMap()
    for info in backend.list(DAMAGE_DIR):
        try:
            plain = sealer.open(load_listed(backend, info), DAMAGE_AAD, info.name)
            doc = decode_document(plain, DamageFile, info.name)
        except NotFoundError:
            continue  # replaced by a prune or a repair meanwhile
        except IntegrityError as err:
            log.warning("%s; ignored", err)
            continue
        damage.files.append(info.name)
        for record in doc.packs:
            damage.add(record)
    return damage


def save_damage(backend: Backend, sealer: Sealer, records: list[DamagedPack]) -> str | None:
    """Write one damage file; returns its name (None when there is nothing to record)."""
    if not records:
        return None
    raw = sealer.seal(encode_document(DamageFile(time=time.time(), packs=records)), DAMAGE_AAD)
    name = f"{DAMAGE_DIR}{file_id(raw)}"
    backend.save(name, raw)
    return name


def replace_damage(backend: Backend, sealer: Sealer, damage: DamageMap, keep: Iterable[str]) -> None:
    """Rewrite the records as one file naming only the packs in `keep` (those still indexed), then
    remove the files the map was read from. A record written meanwhile by a check survives."""
    records = damage.records(keep)
    old = list(damage.files)
    name = save_damage(backend, sealer, records)
    for path in old:
        if path != name:
            backend.remove(path)
    damage.files = [name] if name else []
