"""Components in the repository: what `backup --component` adds to a backup, and `restore --component`.

Backup: each component collects from the source root; its paths are backed up as recorded paths
(read below the source root), and its generated documents are written into a private staging
directory and backed up under the reserved path `/.shadowvault-components/<component>/`. The
snapshot's `components` lists the components it holds.

Restore: the documents are restored first (small), the component plans against the target root from
the snapshot's entries, and --dry-run stops there. A real restore lays the component's paths down in
a staging directory inside the target root (numeric owners: the component maps them by name using its
own account records), re-plans with the content at hand (so identical files are left alone), applies
the plan, and removes the staging directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadowvault.components import get
from shadowvault.components.base import (
    RESERVED_DIR,
    CollectOptions,
    Entry,
    RestoreOptions,
    SnapshotView,
    check_target_root,
    documents_path,
)
from shadowvault.components.plan import Plan
from shadowvault.errors import NotFoundError, UsageError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- backup


@dataclass
class ComponentBackup:
    """What the archive's backup needs to include the components (see BackupRequest)."""

    components: list[str]
    source_root: str
    paths: list[str] = field(default_factory=list)
    extra_sources: list[tuple[str, str]] = field(default_factory=list)  # (recorded path, read path)
    excludes: list[str] = field(default_factory=list)


def prepare_backup(
    names: list[str],
    source_root: str | os.PathLike[str],
    options: CollectOptions,
    staging: str | os.PathLike[str],
) -> ComponentBackup:
    """Collect every named component from `source_root`; documents go below `staging`."""
    root = Path(os.path.abspath(source_root))
    if not root.is_dir():
        raise UsageError(f"source root {root} is not a directory")
    if options.paths and "files" not in names:
        raise UsageError("PATHS are backed up by the files component: add --component files")
    result = ComponentBackup(components=[], source_root=str(root))
    for name in dict.fromkeys(names):
        component = get(name)
        collection = component.collect(root, options)
        collection.write_documents(staging)
        result.components.append(name)
        result.paths += [p for p in collection.paths if p not in result.paths]
        result.excludes += [e for e in collection.excludes if e not in result.excludes]
    result.extra_sources.append((f"/{RESERVED_DIR}", str(Path(staging) / RESERVED_DIR)))
    return result


# ---------------------------------------------------------------------------------------- restore


def require_component(snapshot_id: str, snapshot: Any, name: str) -> None:
    get(name)  # an unknown name is a usage error, not "not in the snapshot"
    if name not in snapshot.components:
        has = ", ".join(snapshot.components) or "none"
        raise NotFoundError(f"snapshot {snapshot_id[:8]} has no {name} component (it has: {has})")


class RepoView(SnapshotView):
    """A snapshot in the repository; content is available once `materialize` laid it down in staging."""

    movable = True  # the staging tree is ours and inside the target root: entries are renamed into place

    def __init__(self, repo: Any, tree: bytes, staging: Path, paths: list[str] | None = None) -> None:
        self.repo = repo
        self.tree = tree
        self.paths = list(paths or [])
        self.staging = staging
        self.content_root = staging / "content"
        self.documents_root = staging / "documents"
        self.materialized = False

    def fetch_documents(self, component: str) -> None:
        from shadowvault.archive.restore import Restorer

        if not self._exists(documents_path(component)):
            return  # a plain `backup PATHS`: the files component works from the tree alone
        dest = self.documents_root / RESERVED_DIR / component
        Restorer(self.repo, str(dest), numeric_owner=True).restore(self.tree, documents_path(component))

    def recorded_paths(self) -> list[str]:
        return list(self.paths)

    def materialize(self, prefixes: list[str]) -> list[tuple[str, str]]:
        """Restore the entries below `prefixes` into the staging content tree; returns restore errors."""
        from shadowvault.archive.patterns import PathFilter
        from shadowvault.archive.restore import Restorer

        present = [p for p in prefixes if self._exists(p)]
        self.materialized = True
        if not present:
            return []
        restorer = Restorer(
            self.repo,
            str(self.content_root),
            numeric_owner=True,
            path_filter=PathFilter([_glob_escape(p) for p in present], []),
        )
        stats = restorer.restore(self.tree, "/")
        return list(stats.errors)

    def _exists(self, prefix: str) -> bool:
        from shadowvault.archive.restore import find_node

        try:
            find_node(self.repo, self.tree, prefix)
        except NotFoundError:
            return False
        return True

    def document(self, component: str, name: str) -> bytes | None:
        try:
            return (self.documents_root / RESERVED_DIR / component / name).read_bytes()
        except FileNotFoundError:
            return None

    def entries(self, prefix: str) -> Iterator[Entry]:
        from shadowvault.archive.listing import list_snapshot

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


@dataclass
class ComponentRestore:
    plan: Plan
    applied: bool
    errors: list[tuple[str, str]] = field(default_factory=list)


def restore_component(
    repo: Any,
    snapshot_id: str,
    snapshot: Any,
    name: str,
    options: RestoreOptions,
    *,
    on_plan: Callable[[Plan], None] | None = None,
) -> ComponentRestore:
    """Plan (and unless options.dry_run, carry out) the restore of component `name` of a snapshot."""
    require_component(snapshot_id, snapshot, name)
    options.target_root = check_target_root(
        options.target_root, yes_really=options.yes_really, dry_run=options.dry_run
    )
    component = get(name)
    # a real restore stages inside the target root: same filesystem, and its space is the target's
    staging_parent = None if options.dry_run else str(options.target_root)
    staging = Path(tempfile.mkdtemp(prefix=".shadowvault-staging-", dir=staging_parent))
    try:
        os.chmod(staging, 0o700)
        view = RepoView(repo, snapshot.tree, staging, snapshot.paths)
        view.fetch_documents(name)
        if options.dry_run:
            plan = component.plan(view, options)
            if on_plan is not None:
                on_plan(plan)
            return ComponentRestore(plan, applied=False)
        errors = view.materialize(component.restore_prefixes(view, options))
        plan = component.plan(view, options)
        if on_plan is not None:
            on_plan(plan)
        component.apply(plan, view, options)
        return ComponentRestore(plan, applied=True, errors=errors + plan.errors)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_components(
    names: list[str], source_root: str | os.PathLike[str], options: CollectOptions
) -> Iterator[ComponentBackup]:
    """prepare_backup with a private staging directory that is removed afterwards."""
    staging = tempfile.mkdtemp(prefix="shadowvault-components-")
    try:
        yield prepare_backup(names, source_root, options, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
