"""What `backup -vv` is told of each entry: restic's `new`, `modified` and `unchanged` per file and
per directory, as the walk settles them (the CLI prints them; archive/ never does).

A file is reported when its content is stored (new: not in the parent snapshot; modified: read
again; unchanged: taken over from the parent unread); a directory when its tree is written (new,
unchanged: the parent's very tree, else modified). Nothing of this runs without a listener: the
walk checks for one once per directory, or once per file it already handles one by one.
"""

from __future__ import annotations

from collections.abc import Callable

# (action, the entry's path as text, a file's size or None for a directory, whose path ends in "/"
# as restic shows it): called on the walk's main thread only
ItemReport = Callable[[str, str, int | None], None]

NEW, MODIFIED, UNCHANGED = "new", "modified", "unchanged"


def dir_action(existed: bool, old_tree: bytes | None, tree_id: bytes) -> str:
    """A directory's action: new without a parent entry, unchanged when its tree is the parent's."""
    if not existed:
        return NEW
    return UNCHANGED if old_tree == tree_id else MODIFIED
