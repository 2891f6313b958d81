"""Helpers for repository tests: small repositories and snapshots built directly with the API."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node, Tree

PASSWORD = "correct horse battery staple"


def make_snapshot(
    repo: Repository,
    files: dict[str, bytes],
    *,
    when: float | None = None,
    host: str = "testhost",
    paths: list[str] | None = None,
    tags: list[str] | None = None,
) -> tuple[str, dict[str, list[bytes]]]:
    """Store `files` (name -> content) as one directory tree plus a snapshot; returns (id, blob ids)."""
    nodes = []
    content_ids: dict[str, list[bytes]] = {}
    for name in sorted(files):
        ids = [repo.save_blob(BlobType.DATA, chunk) for chunk in repo.chunker.chunk_bytes(files[name])]
        content_ids[name] = ids
        nodes.append(Node(name=name.encode(), type="file", size=len(files[name]), content=ids))
    subdir = repo.save_tree(
        Tree(
            nodes=[
                Node(name=b"inner", type="file", size=5, content=[repo.save_blob(BlobType.DATA, b"inner")])
            ]
        )
    )
    nodes.append(Node(name=b"sub", type="dir", subtree=subdir))
    root = repo.save_tree(Tree(nodes=nodes))
    snap = Snapshot(
        time=time.time() if when is None else when,
        host=host,
        paths=paths or ["/data"],
        tags=tags or [],
        tree=root,
        summary={"bytes": sum(map(len, files.values()))},
    )
    return repo.save_snapshot(snap), content_ids


def restore_all(repo: Repository, snapshot_id: str) -> dict[str, bytes]:
    """Load every file of a snapshot made by make_snapshot (verifies every blob on the way)."""
    snap = repo.load_snapshot(snapshot_id)
    out = {}

    def walk(tree_id: bytes, prefix: str) -> None:
        for node in repo.load_tree(tree_id).nodes:
            name = prefix + node.display_name
            if node.subtree is not None:
                walk(node.subtree, name + "/")
            else:
                out[name] = b"".join(repo.load_blob(b) for b in node.content)

    walk(snap.tree, "")
    return out


def random_files(count: int, size: int, seed: int = 0) -> dict[str, bytes]:
    rnd = __import__("random").Random(seed)
    return {f"file{i}": rnd.randbytes(size) for i in range(count)}


def pack_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "data").rglob("*") if p.is_file())


def env_for(repo: Path) -> dict[str, str]:
    return {"SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_PASSWORD": PASSWORD}


__all__ = ["PASSWORD", "env_for", "make_snapshot", "os", "pack_files", "random_files", "restore_all"]
