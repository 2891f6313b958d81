"""`cat`: one repository object, decrypted and verified, as plain JSON values (or a blob's bytes).

For looking inside a repository (what restic's `cat` is for). Every object is read through the same
checks as everywhere else (names hash to content, AEAD tags verify). Ids come from the command line
and are checked before they become object names: hex only, so no `/` or `..` ever reaches a backend.
Byte strings in documents (ids) are shown as hex; names in trees exactly (as `ls --json` shows them).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from shadowvault.display import exact_fields
from shadowvault.errors import IntegrityError, NotFoundError, UsageError
from shadowvault.repo.format import file_id
from shadowvault.repo.keys import key_name
from shadowvault.repo.master_index import INDEX_DIR
from shadowvault.repo.pack import read_header
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node

KINDS = ("config", "snapshot", "tree", "blob", "index", "key", "pack")
ID_LENGTH = 64  # hex digits of a blob id or a file name


def hex_id(value: str, what: str, *, prefix_ok: bool) -> str:
    """A full hex id (or a prefix of one, for files), lowercased; UsageError for anything else."""
    text = value.strip().lower()
    short = len(text) < ID_LENGTH
    if (
        not text
        or len(text) > ID_LENGTH
        or any(c not in "0123456789abcdef" for c in text)
        or (short and not prefix_ok)
    ):
        want = f"a {what} id (64 hex digits{', or a unique prefix' if prefix_ok else ''})"
        raise UsageError(f"{value!r} is not {want}")
    return text


def _plain(value: Any) -> Any:
    """Documents as JSON values: bytes (ids) as hex, structs as dicts."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.structs.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def node_document(node: Node) -> dict[str, Any]:
    """A tree entry with every stored field: names and link targets exact, ids hex, xattrs base64."""
    doc: dict[str, Any] = {
        f.name: _plain(getattr(node, f.name))
        for f in msgspec.structs.fields(node)
        if f.name not in ("name", "link_target", "xattrs")
    }
    doc.update(exact_fields("name", node.name))
    if node.link_target is not None:
        doc.update(exact_fields("link_target", node.link_target))
    if node.xattrs:
        doc["xattrs"] = msgspec.to_builtins(node.xattrs)  # values base64: they are binary
    return doc


def _unique_file(repo: Repository, directory: str, ref: str, what: str) -> str:
    """The one stored file under `directory` whose name starts with `ref`."""
    prefix = hex_id(ref, what, prefix_ok=True)
    names = [
        info.name for info in repo.backend.list(directory) if info.name.rsplit("/", 1)[-1].startswith(prefix)
    ]
    if not names:
        raise NotFoundError(f"no {what} with id {prefix}")
    if len(names) > 1:
        raise UsageError(f"{what} id prefix {prefix} is ambiguous ({len(names)} match)")
    return names[0]


def snapshot_document(snapshot_id: str, snapshot: Snapshot) -> dict[str, Any]:
    return {"id": snapshot_id, **_plain(snapshot)}


def cat_document(repo: Repository, kind: str, ref: str | None) -> Any:
    """The JSON values of one object: config, snapshot, tree, index, key or pack (its header)."""
    if kind == "config":
        return _plain(repo.config)
    if ref is None:
        raise UsageError(f"`cat {kind}` needs an id")
    if kind == "snapshot":
        snapshot_id = repo.resolve_snapshot_id(hex_id(ref, "snapshot", prefix_ok=True))
        return snapshot_document(snapshot_id, repo.load_snapshot(snapshot_id))
    if kind == "tree":
        tree = repo.load_tree(bytes.fromhex(hex_id(ref, "tree", prefix_ok=False)))
        return {"nodes": [node_document(n) for n in tree.nodes]}
    if kind == "index":
        name = _unique_file(repo, INDEX_DIR, ref, "index file")
        return {"id": name.rsplit("/", 1)[1], **_plain(repo.load_index_file(name))}
    if kind == "key":
        name = key_name(repo.backend, hex_id(ref, "key", prefix_ok=True))
        raw = repo.backend.load(name)
        if file_id(raw) != name.rsplit("/", 1)[1]:
            raise IntegrityError(f"key file {name} is damaged (its content does not match its name)")
        try:
            return json.loads(raw)
        except ValueError as err:
            raise IntegrityError(f"key file {name} is not JSON: {err}") from err
    if kind == "pack":
        pack_id = _pack_id(repo, ref)
        blobs = read_header(repo.backend, repo.sealer, pack_id)
        return {
            "id": pack_id,
            "blobs": [
                {
                    "type": "tree" if b.type == 1 else "data",
                    "id": b.id.hex(),
                    "offset": b.offset,
                    "length": b.length,
                    "raw_length": b.raw_length,
                    "compressed": b.compressed,
                }
                for b in blobs
            ],
        }
    raise UsageError(f"cannot cat {kind!r}: give one of {', '.join(KINDS)}")


def _pack_id(repo: Repository, ref: str) -> str:
    """A full pack id, or the one indexed pack a prefix names (packs sit in data/XX/ by their id)."""
    prefix = hex_id(ref, "pack", prefix_ok=True)
    if len(prefix) == ID_LENGTH:
        return prefix
    found = [p for p in repo.index.pack_ids if p.startswith(prefix)]
    if len(found) != 1:
        raise (NotFoundError if not found else UsageError)(
            f"no indexed pack with id {prefix}" if not found else f"pack id prefix {prefix} is ambiguous"
        )
    return found[0]


def cat_blob(repo: Repository, ref: str) -> bytes:
    """A blob's verified plaintext (data or tree) by its full id."""
    return repo.load_blob(bytes.fromhex(hex_id(ref, "blob", prefix_ok=False)))
