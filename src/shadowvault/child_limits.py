"""The descriptor limit a child starts with: the one this process was started with.

The daemon raises its soft RLIMIT_NOFILE to the hard limit (service/descriptors.py): a few hundred
idle connections would exhaust the 1024 a service starts with. Children inherit that, and some of
the programs Shadowvault starts (pg_dump, samba-tool, hooks and script writers, qemu-img, ...) are
old enough to select() on descriptors past FD_SETSIZE (1024), or to close every descriptor up to
the soft limit one by one. So the limit is raised here, the one it replaced is kept, and each child
gets it back between fork and exec: `preexec()` is the preexec_fn of every program Shadowvault
starts (proc.py's commands, external writers, a restored VM's boot check); its own Python helpers
(the watchdog, worker processes) keep the raised limit, which they do not mind.
"""

from __future__ import annotations

import functools
import logging
import resource
from collections.abc import Callable

log = logging.getLogger(__name__)

# The process's own limit is process-wide state, so is what undoes it in a child: set once, by
# raise_soft_limit, to a C call bound in advance (no Python code runs between fork and exec).
_restore_in_child: Callable[[], None] | None = None


def raise_soft_limit() -> int:
    """Raise the soft descriptor limit to the hard one (children keep the old one); the soft limit now."""
    global _restore_in_child
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, err)
        else:
            if _restore_in_child is None:  # raised twice: the first limit is still the one to give back
                _restore_in_child = functools.partial(
                    resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard)
                )
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def preexec() -> Callable[[], None] | None:
    """The preexec_fn that gives a child the limit this process started with; None when it never
    changed (Popen keeps its faster spawn without one)."""
    return _restore_in_child
