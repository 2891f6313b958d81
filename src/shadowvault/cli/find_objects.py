"""`find --blob/--tree/--pack [--show-pack-id] ID...`: restic's find by object id (cli/inspect_cmds.py
parses; archive/find_ids.py walks; repo/object_refs.py turns what was typed into full ids).

Output follows our `find`: one line per match (short snapshot id, time, size, path), then the object
(`blob 1a2b3c4d` or `tree ...`) and with --show-pack-id its pack; --json one `match` line each with
restic's `object_type`, `id` and `parent_tree`, and a `summary`.
"""

from __future__ import annotations

import sys
import time

from shadowvault.archive.find_ids import IdMatch, find_ids
from shadowvault.archive.listing import describe, display, path_fields
from shadowvault.cli.output import print_json
from shadowvault.display import counted
from shadowvault.errors import UsageError
from shadowvault.repo.format import BlobType
from shadowvault.repo.index import BlobIndex
from shadowvault.repo.object_refs import full_blob_ids, full_pack_ids
from shadowvault.repo.raw_objects import hex_id
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node

MODES = {"blob": "data blob", "tree": "tree", "pack": "pack"}  # --blob/--tree/--pack: what an ID names


def id_mode(
    blob: bool, tree: bool, pack: bool, show_pack_id: bool, pattern_options: dict[str, bool]
) -> str | None:
    """Which of --blob, --tree, --pack was given (None: the arguments are patterns); UsageError for
    a combination that means nothing."""
    given = [name for name, on in (("blob", blob), ("tree", tree), ("pack", pack)) if on]
    if len(given) > 1:
        raise UsageError(
            f"give one of --blob, --tree and --pack, not {' and '.join('--' + g for g in given)}"
        )
    if not given:
        if show_pack_id:
            raise UsageError("--show-pack-id goes with --blob, --tree or --pack")
        return None
    for option, on in pattern_options.items():
        if on:
            raise UsageError(f"{option} applies to patterns, not to --{given[0]} ids")
    return given[0]


def check_ids(mode: str, refs: tuple[str, ...]) -> None:
    """Refuse anything but hex before the repository is opened (a typo costs no password prompt)."""
    for ref in refs:
        hex_id(ref, MODES[mode], prefix_ok=True)


def find_objects(
    repo: Repository,
    snapshots: list[tuple[str, Snapshot]],
    mode: str,
    refs: tuple[str, ...],
    *,
    show_pack_id: bool,
    as_json: bool,
) -> None:
    """Print every entry of `snapshots` that references the objects `refs` name, and a summary."""
    index = repo.index
    blobs, trees, packs = _targets(index, mode, refs)
    wanted = {*blobs, *trees}
    seen: set[bytes] = set()
    count = 0
    for found in find_ids(repo, snapshots, blobs, trees):
        count += 1
        seen.add(found.object_id)
        pack = packs.get(found.object_id) if show_pack_id else None
        if as_json:
            print_json(_match_json(found, show_pack_id, pack))
        else:
            sys.stdout.write(_match_line(found, show_pack_id, pack) + "\n")
    unreferenced = len(wanted - seen)
    if as_json:
        print_json(
            {
                "message_type": "summary",
                "matches": count,
                "snapshots": len(snapshots),
                "unreferenced": unreferenced,
            }
        )
        return
    line = summary_line(count, len(snapshots))
    if unreferenced:
        line += f"; {counted(unreferenced, 'object')} of those asked for in none of them"
    sys.stderr.write(line + "\n")


def _targets(
    index: BlobIndex, mode: str, refs: tuple[str, ...]
) -> tuple[list[bytes], list[bytes], dict[bytes, str]]:
    """The data blobs and trees to look for, and the pack of each (the asked pack with --pack, else
    the copy a read would use; absent when the index has none)."""
    if mode == "pack":
        blobs: list[bytes] = []
        trees: list[bytes] = []
        packs: dict[bytes, str] = {}
        for pack_id, ids in index.blobs_in(full_pack_ids(index, refs)).items():
            for blob_id in ids:
                location = index.lookup(blob_id)
                (trees if location is not None and location.type == BlobType.TREE else blobs).append(blob_id)
                packs[blob_id] = pack_id
        return blobs, trees, packs
    kind = BlobType.DATA if mode == "blob" else BlobType.TREE
    ids = full_blob_ids(index, refs, kind)
    packs = {blob_id: location.pack for blob_id in ids if (location := index.lookup(blob_id)) is not None}
    return (ids, [], packs) if mode == "blob" else ([], ids, packs)


def match_line(snapshot_id: str, path: bytes, node: Node | None, mtime: float) -> str:
    """`find`'s line for a match: short snapshot id, time, size (`-` but for a file) and path."""
    size = node.size if node is not None and node.type == "file" else "-"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))
    return f"{snapshot_id[:8]}  {when}  {size:>12}  {display(path)}"


def summary_line(count: int, snapshots: int) -> str:
    """`find`'s count of matches, for stderr."""
    return f"{count} match{'es' if count != 1 else ''} in {counted(snapshots, 'snapshot')}"


def _match_line(found: IdMatch, show_pack_id: bool, pack: str | None) -> str:
    node = found.node
    mtime = node.mtime_ns / 1e9 if node is not None else found.snapshot.time
    line = f"{match_line(found.snapshot_id, found.path, node, mtime)}  "
    line += f"{found.object_type} {found.object_id.hex()[:8]}"
    if show_pack_id:
        line += f"  pack {pack[:8] if pack else '(not in the index)'}"
    return line


def _match_json(found: IdMatch, show_pack_id: bool, pack: str | None) -> dict[str, object]:
    entry = (
        describe(found.path, found.node)
        if found.node is not None
        else {**path_fields(found.path), "type": "dir"}
    )
    doc: dict[str, object] = {
        "message_type": "match",
        "snapshot_id": found.snapshot_id,
        "object_type": found.object_type,
        "id": found.object_id.hex(),
        "parent_tree": found.parent_tree.hex() if found.parent_tree is not None else None,
        **entry,
    }
    if show_pack_id:
        doc["pack_id"] = pack
    return doc
