"""`backup --component`: what each component collects, staged so that the backup job reads it.

Each component collects from the source root; its paths are backed up as recorded paths (read below
the source root), and its generated documents are written into a private staging directory and
backed up under the reserved path `/.shadowvault-components/<component>/`. The snapshot's
`components` lists the components it holds.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shadowvault.components import get
from shadowvault.components.base import RESERVED_DIR, CollectOptions
from shadowvault.errors import UsageError
from shadowvault.jobs.backup import BackupRequest


@dataclass
class ComponentSelection:
    """Which components to back up, from which tree (`/` or another machine's root), with what options."""

    components: list[str]
    source_root: str | os.PathLike[str] = "/"
    options: CollectOptions = dataclasses.field(default_factory=CollectOptions)


def collect_components(selection: ComponentSelection, staging: str | os.PathLike[str]) -> BackupRequest:
    """Collect every selected component; documents go below `staging`. Returns the backup's sources."""
    root = Path(os.path.abspath(selection.source_root))
    if not root.is_dir():
        raise UsageError(f"source root {root} is not a directory")
    if selection.options.paths and "files" not in selection.components:
        raise UsageError("PATHS are backed up by the files component: add --component files")
    result = BackupRequest(paths=[], source_root=str(root))
    for name in dict.fromkeys(selection.components):
        collection = get(name).collect(root, selection.options)
        collection.write_documents(staging)
        result.components.append(name)
        result.paths += [p for p in collection.paths if p not in result.paths]
    result.extra_sources.append((f"/{RESERVED_DIR}", str(Path(staging) / RESERVED_DIR)))
    return result


@contextmanager
def staged_components(request: BackupRequest, selection: ComponentSelection) -> Iterator[BackupRequest]:
    """`request` with the components' paths and documents; the staging is removed afterwards.

    The request's paths go to the components (through `selection.options`, as the files component's
    paths), which decide what is backed up; its excludes, tags, provider, writers, host and parent
    are kept as they are.
    """
    staging = tempfile.mkdtemp(prefix="shadowvault-components-")
    try:
        collected = collect_components(selection, staging)
        yield dataclasses.replace(
            request,
            paths=collected.paths,
            source_root=collected.source_root,
            extra_sources=collected.extra_sources,
            components=collected.components,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
