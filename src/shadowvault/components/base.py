"""The Component interface: what a component collects from a source root and how it restores into a target.

A component works on a SOURCE ROOT (default "/", in tests a debootstrapped tree or a temporary
directory) and restores into a TARGET ROOT. Collecting yields the absolute paths to back up (seen from
the source root) plus generated documents (account records, package selection, unit states) that the
backup stores under the reserved directory `/.shadowvault-components/<component>/`.

Restoring reads a `SnapshotView`: the documents, the entries (path, type, owner, mode) and, once
materialized, their content. `DirectoryView` is a view over a directory tree (a staging directory
laid down by the archive restore, or, in tests, a source root itself); the plan is computed from the
view, printed by --dry-run, and applied by `apply`.
"""

from __future__ import annotations

import errno
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from shadowvault.archive.metadata import node_type
from shadowvault.components.plan import Plan
from shadowvault.errors import NotFoundError, UsageError

RESERVED_DIR = ".shadowvault-components"


def documents_path(component: str) -> str:
    """Where a component's documents live inside a snapshot (absolute, as backed up)."""
    return f"/{RESERVED_DIR}/{component}"


@dataclass
class CollectOptions:
    users: list[str] | None = None  # user-profiles: the accounts to take (None: every human account)
    paths: list[str] = field(default_factory=list)  # files: the paths to back up
    excludes: list[str] = field(default_factory=list)


@dataclass
class Collection:
    """What one component wants backed up from a source root."""

    component: str
    source_root: Path
    paths: list[str]  # absolute paths as seen inside the source root ("/etc", "/home/alice")
    documents: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes
    excludes: list[str] = field(default_factory=list)

    def write_documents(self, staging_root: str | os.PathLike[str]) -> Path:
        """Write the documents under `staging_root`/.shadowvault-components/<component>/; return that dir."""
        directory = Path(staging_root) / RESERVED_DIR / self.component
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(Path(staging_root) / RESERVED_DIR, 0o700)
        os.chmod(directory, 0o700)
        for name, data in self.documents.items():
            path = directory / name
            if path.parent != directory:  # a document in a subdirectory (system-state's ldap/)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, 0o600)  # account records may hold password hashes
        return directory


@dataclass
class RestoreOptions:
    target_root: Path
    users: list[str] | None = None
    overwrite: bool = False  # user-profiles: replace files of an existing profile
    dry_run: bool = False
    maps: list[tuple[str, str]] = field(default_factory=list)  # files: --map SRC=DST
    includes: list[str] = field(default_factory=list)  # restore only these source paths (prefixes)
    excludes: list[str] = field(default_factory=list)  # leave out paths matching these globs
    create_missing_accounts: bool = False  # files: create owners that do not exist in the target
    fix_fstab: bool = False  # system-state: rewrite fstab devices to the target's
    install_packages: bool = True  # system-state: run apt in the target
    yes_really: bool = False  # allow "/" as the target root
    directory_restore: str | None = None  # system-state: recover the Samba DC as new-dc | same-dc
    directory_options: dict[str, Any] = field(default_factory=dict)  # its samba.KEY=VALUE options


@dataclass
class Entry:
    """One entry of a snapshot (or directory) as a restore plan needs it."""

    path: str  # relative to the source root, "/"-separated, no leading slash ("etc/hostname")
    type: str  # file | dir | symlink | blockdev | chardev | fifo | socket
    mode: int
    uid: int
    gid: int
    size: int = 0
    mtime_ns: int = 0
    link_target: str | None = None
    user: str | None = None  # owner names as the archive recorded them (RepoView), if known
    group: str | None = None


def entry_of(path: Path, rel: str) -> Entry:
    st = path.lstat()
    kind = node_type(st.st_mode)
    return Entry(
        path=rel,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if kind == "file" else 0,
        mtime_ns=st.st_mtime_ns,
        link_target=os.readlink(path) if kind == "symlink" else None,
    )


def check_document_name(component: str, name: str) -> tuple[str, ...]:
    """The parts of a document's name, refused when it could leave the component's documents: the
    name comes from the snapshot (samba.json names its archive), and `/etc/shadow` or `../..` would
    read a file of the machine doing the restore."""
    parts = tuple(name.split("/"))
    if not name or any(part in ("", ".", "..") for part in parts) or "\0" in name:
        raise UsageError(f"the snapshot's {component} names a document {name!r} outside its documents")
    return parts


def read_document(documents_root: Path, component: str, name: str) -> bytes | None:
    """A document restored under `documents_root`, None when absent; never through a symlink (the
    restored documents are the snapshot's, and a link could point anywhere on this machine)."""
    base = documents_root / RESERVED_DIR / component
    path = base.joinpath(*check_document_name(component, name))
    if Path(os.path.realpath(path.parent)) != Path(os.path.realpath(base), path.parent.relative_to(base)):
        raise UsageError(f"the snapshot's {component} document {name!r} lies behind a symbolic link")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UsageError(f"the snapshot's {component} document {name!r} is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read()


class SnapshotView(ABC):
    """Read access to what a snapshot holds for a component."""

    # True when content paths are a private staging copy that a restore may move into place
    movable: bool = False

    @abstractmethod
    def document(self, component: str, name: str) -> bytes | None:
        """A generated document, or None when the snapshot has none of that name."""

    @abstractmethod
    def entries(self, prefix: str) -> Iterator[Entry]:
        """Every entry at or below `prefix` (relative), parents before children."""

    @abstractmethod
    def content_path(self, rel: str) -> Path | None:
        """A local path holding the entry's bytes/metadata, or None when content is not laid down."""

    def recorded_paths(self) -> list[str]:
        """The paths the backup was asked for (a plain `backup PATHS` has no component documents)."""
        return []


class DirectoryView(SnapshotView):
    """A view over a directory tree whose layout is the source root's (documents under RESERVED_DIR)."""

    def __init__(self, root: str | os.PathLike[str], documents_root: str | os.PathLike[str] | None = None):
        self.root = Path(root)
        self.documents_root = Path(documents_root) if documents_root is not None else self.root

    def document(self, component: str, name: str) -> bytes | None:
        return read_document(self.documents_root, component, name)

    def entries(self, prefix: str) -> Iterator[Entry]:
        prefix = prefix.strip("/")
        top = self.root / prefix
        if not top.exists() and not top.is_symlink():
            return
        yield entry_of(top, prefix)
        if top.is_symlink() or not top.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            base = Path(dirpath)
            rel_base = base.relative_to(self.root).as_posix()
            for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
                yield entry_of(base / name, f"{rel_base}/{name}")
            dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
            for name in dirnames:
                yield entry_of(base / name, f"{rel_base}/{name}")

    def content_path(self, rel: str) -> Path | None:
        path = self.root / rel
        return path if path.exists() or path.is_symlink() else None


def check_target_root(path: str | os.PathLike[str], *, yes_really: bool, dry_run: bool = False) -> Path:
    """The target root as an absolute path; refuse a missing one, a non-directory, and "/" unless asked."""
    target = Path(os.path.abspath(path))
    if not target.exists():
        raise NotFoundError(f"target root {target} does not exist")
    if not target.is_dir():
        raise UsageError(f"target root {target} is not a directory")
    if target.resolve() == Path("/") and not yes_really and not dry_run:
        raise UsageError("refusing to restore into / (the running system) without --yes-really")
    return target


class Component(ABC):
    """One kind of content (files, user-profiles, system-state)."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def collect(self, source_root: Path, options: CollectOptions) -> Collection:
        """The paths to back up from `source_root` and the documents to store with them."""

    @abstractmethod
    def plan(self, view: SnapshotView, options: RestoreOptions) -> Plan:
        """What a restore into options.target_root would do; changes nothing."""

    @abstractmethod
    def apply(self, plan: Plan, view: SnapshotView, options: RestoreOptions) -> Plan:
        """Carry `plan` out (content must be materialized in `view`); returns the plan with warnings."""

    def restore_prefixes(self, view: SnapshotView, options: RestoreOptions) -> list[str]:
        """The source paths (absolute) whose content `apply` needs laid down; default: everything."""
        return ["/"]
