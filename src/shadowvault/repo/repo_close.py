"""What closing a repository does with this process's work before it lets go (`Repository.close`):
the damage its reads met saved, then either everything flushed, index files consolidated and the
index kept for the next command, or, after an error, only the finished packs indexed."""

from __future__ import annotations

import logging

from shadowvault.errors import ShadowvaultError
from shadowvault.repo.master_index import MasterIndex
from shadowvault.repo.packer import Packer
from shadowvault.repo.session import Session

log = logging.getLogger(__name__)


def finish(master: MasterIndex, packer: Packer, session: Session | None, *, flush: bool) -> None:
    """The work of `Repository.close` before it aborts the open packs and ends the session."""
    if session is not None:
        master.save_found_damage()
    if flush:
        packer.flush()
        if session is None or session.doc.kind != "prune":
            master.consolidate()
        # after a prune too: it removed index files, and the next command (often a backup)
        # would build the index anew before it did anything
        _keep_index(master, session)
    else:
        try:
            packer.wait_commits()  # the full packs being committed are indexed too
            master.write_pending()
        except ShadowvaultError as err:
            log.warning("could not index the finished packs: %s", err)


def _keep_index(master: MasterIndex, session: Session | None) -> None:
    """The index kept for the next command (master_index.keep_for_next): only a help to it."""
    if session is None:
        return
    try:
        master.keep_for_next()
    except ShadowvaultError as err:
        log.debug("the index is not kept for the next command: %s", err)
