"""Blob and pack ids typed on a command line (`find --blob/--tree/--pack`), made full ids.

An id is hostile input: it is hex or refused (raw_objects.hex_id), and a prefix must name exactly one
blob of the kind asked (or one pack) in the index: an ambiguous prefix is a usage error rather than a
search for several objects the user never named. A full blob id is taken as given even when the index
lacks it: the blob `check` reports missing is exactly the one whose files a user wants to find.
"""

from __future__ import annotations

from collections.abc import Iterable

from shadowvault.errors import NotFoundError, UsageError
from shadowvault.repo.format import BlobType
from shadowvault.repo.index import BlobIndex
from shadowvault.repo.raw_objects import ID_LENGTH, hex_id

_KIND_NAMES = {BlobType.DATA: "data blob", BlobType.TREE: "tree"}


def full_blob_ids(index: BlobIndex, refs: Iterable[str], kind: BlobType) -> list[bytes]:
    """The full id each ref names (in order, once each), of a blob of `kind`."""
    what = _KIND_NAMES[kind]
    texts = list(dict.fromkeys(hex_id(ref, what, prefix_ok=True) for ref in refs))
    prefixes = [text for text in texts if len(text) < ID_LENGTH]
    found: dict[str, list[bytes]] = {prefix: [] for prefix in prefixes}
    if prefixes:  # one pass over the index for all of them (find walks every snapshot after this)
        for blob_id in index.blob_ids():
            text = blob_id.hex()
            for prefix in prefixes:
                if text.startswith(prefix):
                    location = index.lookup(blob_id)
                    if location is not None and location.type == kind:
                        found[prefix].append(blob_id)
    ids: list[bytes] = []
    for text in texts:
        if len(text) == ID_LENGTH:
            ids.append(bytes.fromhex(text))
            continue
        matches = found[text]
        if not matches:
            raise NotFoundError(f"no {what} in the index has an id starting with {text}")
        if len(matches) > 1:
            many = f"{len(matches)} {what}s start with it"
            raise UsageError(f"{what} id prefix {text} is ambiguous ({many}): give more digits")
        ids.append(matches[0])
    return list(dict.fromkeys(ids))


def full_pack_ids(index: BlobIndex, refs: Iterable[str]) -> list[str]:
    """The indexed pack each ref names (in order, once each): a full id or a unique prefix."""
    packs = index.pack_ids
    chosen: list[str] = []
    for ref in refs:
        text = hex_id(ref, "pack", prefix_ok=True)
        matches = [pack for pack in packs if pack.startswith(text)]
        if not matches:
            raise NotFoundError(f"no indexed pack has an id starting with {text}")
        if len(matches) > 1:
            raise UsageError(
                f"pack id prefix {text} is ambiguous ({len(matches)} packs start with it): give more digits"
            )
        chosen.append(matches[0])
    return list(dict.fromkeys(chosen))
