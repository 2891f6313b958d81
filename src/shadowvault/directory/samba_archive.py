"""A samba-tool archive read from a backup, checked before anything unpacks it, and unpacked safely.

The archive (and the sysvol.tar.gz inside it) comes from the snapshot, so it is hostile input. GNU
tar, and samba-tool's own `tarfile.extractall` (the system python, with no extraction filter), write
through a symlink member that an earlier member planted, write absolute names and `..`, make device
files and hard-link to anything: a forged archive could overwrite any file of the machine doing the
restore. So every member is checked first, and the archive is refused whole (nothing unpacked) when
one is unsafe:
- a name that is absolute, holds `..` or a NUL, or comes twice;
- anything but a file, a directory, a hard link to an earlier file, or a symlink whose target is
  relative without `..` (it can only point further down) and that no other member goes through;
- in the outer archive, a sysvol.tar.gz that fails the same checks.
samba-tool (new-dc) then unpacks an archive that is known to be safe; same-dc unpacks it with tarfile
(and the 'data' filter where this Python has it, as a second guard).
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from collections.abc import Callable
from typing import IO

from shadowvault.errors import ShadowvaultError

SYSVOL_TAR = "sysvol.tar.gz"


class UnsafeArchiveError(ShadowvaultError):
    """A samba-tool archive from the backup holds a member that could write outside its directory."""


def _name(raw: str) -> str:
    """A member's name as a path inside the destination ("." for the destination itself)."""
    return posixpath.normpath(raw) if raw not in ("", ".", "./") else "."


def _unsafe_name(raw: str) -> str | None:
    if not raw or "\0" in raw:
        return "an empty name or one with a NUL"
    if raw.startswith("/"):
        return "an absolute name"
    if ".." in raw.split("/"):
        return "a name with '..'"
    return None


def _why_unsafe(member: tarfile.TarInfo, files: set[str], links: set[str], seen: set[str]) -> str | None:
    """Why `member` is unsafe, given the earlier members (files, symlinks, every name); None when safe."""
    bad = _unsafe_name(member.name)
    if bad:
        return bad
    name = _name(member.name)
    if name in seen:
        return "a name that comes twice"
    parents = name.split("/")[:-1]
    if any("/".join(parents[: i + 1]) in links for i in range(len(parents))):
        return "a name below a symbolic link of the archive"
    if member.isreg() or member.isdir():
        return None
    if member.islnk():
        bad = _unsafe_name(member.linkname)
        if bad or _name(member.linkname) not in files:
            return f"a hard link to {member.linkname!r}, not a file of the archive"
        return None
    if member.issym():
        target = member.linkname
        if _unsafe_name(target) or not target:
            return f"a symbolic link to {target!r}, which could leave the archive"
        return None
    return "a device, FIFO or other special file"


def _check_members(tar: tarfile.TarFile, label: str) -> list[tarfile.TarInfo]:
    files: set[str] = set()
    links: set[str] = set()
    seen: set[str] = set()
    members = []
    for member in tar:
        why = _why_unsafe(member, files, links, seen)
        if why:
            raise UnsafeArchiveError(
                f"{label} holds an unsafe member {member.name!r}: {why}; nothing was unpacked"
            )
        name = _name(member.name)
        seen.add(name)
        if member.isreg():
            files.add(name)
        elif member.issym():
            links.add(name)
        members.append(member)
    return members


def _open(path: str | None, label: str, fileobj: IO[bytes] | None = None) -> tarfile.TarFile:
    try:
        return tarfile.open(path, fileobj=fileobj, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UnsafeArchiveError(f"{label} is not a readable tar archive: {err}") from None


def check_archive(archive: str | bytes, label: str = "the backup's Samba archive") -> None:
    """Refuse `archive` (a path, or the archive itself) and its sysvol.tar.gz unless every member is
    safe to unpack; one-line error."""
    try:
        whole = io.BytesIO(archive) if isinstance(archive, bytes) else None
        with _open(None if whole is not None else str(archive), label, whole) as tar:
            for member in _check_members(tar, label):
                if _name(member.name) == SYSVOL_TAR and member.isreg():
                    inner = tar.extractfile(member)
                    assert inner is not None  # a regular member always has a file object
                    with _open(None, f"{label}'s {SYSVOL_TAR}", inner) as sysvol:
                        _check_members(sysvol, f"{label}'s {SYSVOL_TAR}")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UnsafeArchiveError(f"{label} is damaged: {err}") from None


def unpack(path: str, dest: str, label: str, skip: Callable[[str], bool] = lambda _name: False) -> None:
    """Unpack the checked members of `path` into the directory `dest` (made by the caller, empty),
    leaving out those whose name `skip` accepts."""
    try:
        with _open(path, label) as tar:
            members = [m for m in _check_members(tar, label) if not skip(_name(m.name))]
            data_filter = getattr(tarfile, "data_filter", None)  # Python 3.11.4+
            if data_filter is not None:
                tar.extractall(dest, members=members, filter=data_filter)
            else:
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as err:  # tarfile.FilterError included
        raise UnsafeArchiveError(f"{label} is damaged or unsafe: {err}") from None
    except OSError as err:
        raise UnsafeArchiveError(f"cannot unpack {label} into {os.path.dirname(dest)}: {err}") from None
