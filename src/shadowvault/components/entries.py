"""Planning and applying the restore of a subtree of a snapshot into a target root.

Shared by every component: walk the view's entries below a source prefix, decide for each one
(create, replace, leave alone), then lay the planned ones down with owners mapped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from shadowvault.components.accounts import IdMap
from shadowvault.components.base import Entry, SnapshotView, entry_of
from shadowvault.components.layout import lay_entry, resolve_in_root, restore_dir_times, same_content
from shadowvault.components.plan import Plan
from shadowvault.paths_within import is_within

log = logging.getLogger(__name__)

# Decides what to do with one entry whose target exists: returns (verb, reason) or None for the default.
Decider = Callable[[Entry, Path], tuple[str, str] | None]


def map_path(rel: str, src_prefix: str, dest_prefix: str) -> str:
    """`rel` (below `src_prefix`) moved under `dest_prefix`; all "/"-separated, no leading slash."""
    src = PurePosixPath("/" + src_prefix.strip("/"))
    dest = PurePosixPath("/" + dest_prefix.strip("/"))
    path = PurePosixPath("/" + rel.strip("/"))
    return (dest / path.relative_to(src)).as_posix().lstrip("/")


def selected(rel: str, includes: list[str]) -> bool:
    """True when `rel` is inside an --include path, or a directory on the way to one (or no includes)."""
    if not includes:
        return True
    path = "/" + rel.strip("/")
    for include in includes:
        inc = "/" + include.strip("/")
        if is_within(path, inc) or is_within(inc, path):
            return True
    return False


def _exclusion(excludes: list[str] | None) -> Callable[[str], bool]:
    """--exclude globs with the archive's rules (restic/gitignore style; see archive/patterns.py)."""
    if not excludes:
        return lambda path: False
    from shadowvault.archive.patterns import PathFilter

    path_filter = PathFilter([], list(excludes))
    return lambda path: not path_filter.included(path.encode("utf-8", errors="surrogateescape"))


def plan_subtree(
    plan: Plan,
    view: SnapshotView,
    target_root: Path,
    src_prefix: str,
    dest_prefix: str,
    *,
    existing: str = "replace",
    decide: Decider | None = None,
    skip: Callable[[Entry], bool] | None = None,
    includes: list[str] | None = None,
    excludes: list[str] | None = None,
) -> list[Entry]:
    """Add an action per entry below `src_prefix`; `existing` is what to do when the target has it:
    "replace" (files that differ; identical ones are left alone) or "leave". Returns the entries seen."""
    seen: list[Entry] = []
    excluded = _exclusion(excludes)
    for entry in view.entries(src_prefix):
        if (skip is not None and skip(entry)) or not selected(entry.path, includes or []):
            continue
        if excluded("/" + entry.path):
            continue
        if entry.type == "socket":
            continue
        seen.append(entry)
        dest_rel = map_path(entry.path, src_prefix, dest_prefix)
        dest = resolve_in_root(target_root, dest_rel)
        shown = "/" + dest_rel
        if not (dest.exists() or dest.is_symlink()):
            plan.add("create", entry.type, shown, source=entry.path)
            continue
        verdict = decide(entry, dest) if decide is not None else None
        if verdict is not None:
            verb, reason = verdict
            plan.add(verb, entry.type, shown, reason, source=entry.path)
        elif entry.type == "dir" and dest.is_dir() and not dest.is_symlink():
            plan.add("leave", "dir", shown, "exists", source=entry.path)
        elif existing == "leave":
            plan.add("leave", entry.type, shown, "exists", source=entry.path)
        else:
            content = view.content_path(entry.path)
            if content is not None and same_content(content, dest):
                plan.add("leave", entry.type, shown, "identical", source=entry.path)
            elif content is None and _same_size_and_time(entry, dest):
                plan.add("leave", entry.type, shown, "same size and modification time", source=entry.path)
            else:
                plan.add("replace", entry.type, shown, source=entry.path)
    return seen


def _same_size_and_time(entry: Entry, dest: Path) -> bool:
    """The dry-run's guess (content is not at hand): a file with the same size and mtime is identical."""
    if entry.type == "symlink":
        return dest.is_symlink() and os.readlink(dest) == entry.link_target
    if entry.type != "file" or dest.is_symlink() or not dest.is_file():
        return False
    st = dest.stat()
    return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns


def apply_subtree_actions(
    plan: Plan,
    view: SnapshotView,
    target_root: Path,
    idmap: IdMap,
    *,
    kinds: tuple[str, ...] = ("file", "dir", "symlink", "fifo", "blockdev", "chardev"),
    owner: Callable[[Entry], tuple[int, int]] | None = None,
) -> int:
    """Lay down every create/replace action of `plan` whose kind is a file type; returns how many."""
    done = 0
    dirs: list[tuple[str, Path]] = []
    for action in plan.actions:
        if action.verb not in ("create", "replace") or action.kind not in kinds or action.source is None:
            continue
        content = view.content_path(action.source)
        if content is None:
            plan.warn(f"{action.target}: not in the restored content, skipped")
            continue
        entry = entry_of(content, action.source)
        uid, gid = owner(entry) if owner is not None else (idmap.uid(entry.uid), idmap.gid(entry.gid))
        try:
            lay_entry(target_root, action.target, entry, content, uid, gid, idmap, move=view.movable)
        except OSError as err:
            plan.warn(f"{action.target}: {err.strerror or err}")
            continue
        if entry.type == "dir":
            dirs.append((action.target, content))
        done += 1
    for target, content in reversed(dirs):
        restore_dir_times(target_root, target, content)
    return done
