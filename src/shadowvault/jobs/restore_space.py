"""Whether a restore through writers fits on its target filesystems, asked before anything is stopped.

An in-place restore stops the application and sets its data aside (a rename: the old data keeps its
space) before laying the backup down. A database bigger than the free space then failed file by
file, hundreds of "No space left on device" lines, with the application stopped and a partial copy
in its place. The backup's size is known from the snapshot's trees, so such a restore is refused
before any writer's pre_restore (and its dry run says so too).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from shadowvault.archive.tree_paths import find_node
from shadowvault.archive.tree_totals import RestoreSizes
from shadowvault.display import human_size
from shadowvault.errors import NotFoundError, ShadowvaultError
from shadowvault.jobs.writer_plan import target_path
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node
from shadowvault.shadow.manifest import WriterReport


class NoSpaceError(ShadowvaultError):
    """The files a restore would lay down do not fit in the free space of their filesystem."""


def stored_bytes(sizes: RestoreSizes, node: Node) -> int:
    """The bytes of the files at and below `node`, as a restore lays them down (a hard-linked file
    once; each tree read once: a crafted tree reached by 2^40 paths is summed, not walked)."""
    if node.type == "dir":
        return sizes.of(node.subtree)[0]
    return node.size if node.type == "file" else 0


def existing_ancestor(path: str) -> str:
    """`path` or its nearest ancestor that exists: the filesystem the path will be created on."""
    while not os.path.lexists(path) and path not in ("", "/"):
        path = os.path.dirname(path)
    return path or "/"


def free_bytes(path: str) -> int:
    """The bytes an unprivileged write may still take on the filesystem of `path` (which exists)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_fits(
    repo: Repository, snapshot: Snapshot, target_root: str, reports: Iterable[tuple[str, WriterReport]]
) -> None:
    """Raise NoSpaceError when the components of `reports` (label, report) need more than the free
    space of a target filesystem; what is there now is set aside, not freed, so it does not count."""
    sizes = RestoreSizes(repo)
    where: dict[int, str] = {}  # st_dev -> a path on that filesystem
    size: dict[int, int] = {}
    labels: dict[int, list[str]] = {}
    for label, report in reports:
        for component in report.components:
            for path in component.paths:
                try:
                    node = find_node(repo, snapshot.tree, path)
                except NotFoundError:
                    continue  # not in the backup: nothing laid down
                if node is None:
                    continue
                existing = existing_ancestor(target_path(target_root, path))
                dev = os.stat(existing).st_dev
                where.setdefault(dev, existing)
                size[dev] = size.get(dev, 0) + stored_bytes(sizes, node)
                if label not in labels.setdefault(dev, []):
                    labels[dev].append(label)
    for dev, needed in size.items():
        free = free_bytes(where[dev])
        if needed > free:
            raise NoSpaceError(
                f"not enough space to restore {', '.join(labels[dev])}: its files need {human_size(needed)}"
                f" on the filesystem of {where[dev]}, which has {human_size(free)} free (what is there now is"
                " set aside, not freed); nothing was stopped or changed"
            )
