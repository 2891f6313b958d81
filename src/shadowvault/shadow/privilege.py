"""Who may create shadow sets: root (the user who can freeze, snapshot and write the set records).

A user without that right used to get `internal error: PermissionError` after the writers had been
started. Here they are told, in one line and before anything is touched, that it needs root; a
PermissionError that still escapes while the set is made becomes the same PermissionDeniedError.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from shadowvault.errors import PermissionDeniedError
from shadowvault.shadow.store import ShadowStore

NEEDS_ROOT = "creating a shadow set needs root"


def check_may_create_shadow_sets(store: ShadowStore | None = None, *, hint: str = "") -> None:
    """Raise PermissionDeniedError unless this process may record shadow sets (root may).

    `hint` ends the message: what the user can do instead (backup: read the live files).
    """
    store = store or ShadowStore()
    try:
        store.new_id()  # makes the state directory when it is missing, and looks into it
        allowed = os.access(store.root, os.W_OK | os.X_OK, effective_ids=True)
    except (PermissionError, PermissionDeniedError):
        allowed = False
    if not allowed:
        raise PermissionDeniedError(
            f"{NEEDS_ROOT} (shadow sets are recorded in {store.root}, which this user may not write)"
            + (f"; {hint}" if hint else "")
        )


@contextlib.contextmanager
def needs_root() -> Iterator[None]:
    """Make a shadow set inside this block: a PermissionError becomes one line saying it needs root."""
    try:
        yield
    except PermissionError as err:
        where = f" on {err.filename}" if err.filename else ""
        raise PermissionDeniedError(f"{NEEDS_ROOT} (permission denied{where})") from err
