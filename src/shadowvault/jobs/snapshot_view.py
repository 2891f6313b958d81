"""A snapshot in the repository as a component's restore sees it (components/base.py's SnapshotView).

Documents are restored first (small) into a private staging directory; the component plans from the
snapshot's entries; `materialize` then lays the entries a restore needs down in the staging content
tree (numeric owners: the component maps them by name using its own account records), from where
the restore moves them into place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from shadowvault import cancellation
from shadowvault.archive.listing import list_snapshot
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.restore import Restorer, RestoreStats
from shadowvault.archive.tree_paths import find_node
from shadowvault.components.base import RESERVED_DIR, Entry, SnapshotView, documents_path, read_document
from shadowvault.errors import NotFoundError
from shadowvault.repo.repository import Repository


class RepoView(SnapshotView):
    """A snapshot in the repository; content is available once `materialize` laid it down in staging."""

    movable = True  # the staging tree is ours and inside the target root: entries are renamed into place

    def __init__(self, repo: Repository, tree: bytes, staging: Path, paths: list[str] | None = None) -> None:
        self.repo = repo
        self.tree = tree
        self.paths = list(paths or [])
        self.staging = staging
        self.content_root = staging / "content"
        self.documents_root = staging / "documents"
        self.materialized = False

    def fetch_documents(self, component: str) -> None:
        if not self._exists(documents_path(component)):
            return  # a plain `backup PATHS`: the files component works from the tree alone
        dest = self.documents_root / RESERVED_DIR / component
        Restorer(self.repo, str(dest), numeric_owner=True).restore(self.tree, documents_path(component))

    def recorded_paths(self) -> list[str]:
        return list(self.paths)

    def materialize(self, prefixes: list[str]) -> list[tuple[bytes, str]]:
        """Restore the entries below `prefixes` into the staging content tree; returns restore errors
        (snapshot path, why).
        A cancelled run stops it within a file (the staging directory goes with the restore)."""
        present = [p for p in prefixes if self._exists(p)]
        self.materialized = True
        if not present:
            return []
        restorer = Restorer(
            self.repo,
            str(self.content_root),
            numeric_owner=True,
            # "/" is everything: as a glob it would match the root alone
            path_filter=PathFilter([] if "/" in present else [_glob_escape(p) for p in present], []),
            stats=RestoreStats(cancellation=cancellation.current()),
        )
        stats = restorer.restore(self.tree, "/")
        return list(stats.errors)

    def _exists(self, prefix: str) -> bool:
        try:
            find_node(self.repo, self.tree, prefix)
        except NotFoundError:
            return False
        return True

    def document(self, component: str, name: str) -> bytes | None:
        return read_document(self.documents_root, component, name)

    def entries(self, prefix: str) -> Iterator[Entry]:
        if not self._exists(prefix):
            return
        for raw, node in list_snapshot(self.repo, self.tree, "/" + prefix.strip("/")):
            rel = os.fsdecode(raw).lstrip("/")
            link = os.fsdecode(node.link_target) if node.link_target is not None else None
            yield Entry(
                path=rel,
                type=node.type,
                mode=node.mode,
                uid=node.uid,
                gid=node.gid,
                size=node.size,
                mtime_ns=node.mtime_ns,
                link_target=link,
                user=node.user,
                group=node.group,
            )

    def content_path(self, rel: str) -> Path | None:
        if not self.materialized:
            return None
        path = self.content_root / rel.lstrip("/")
        return path if path.exists() or path.is_symlink() else None


def _glob_escape(path: str) -> str:
    """An anchored include pattern matching exactly `path` (glob characters escaped as classes)."""
    out = "".join(f"[{c}]" if c in "*?[" else c for c in path)
    return "/" + out.lstrip("/")
