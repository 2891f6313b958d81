"""Whether one more connection comes in, from the kernel's word on who opened it (SO_PEERCRED).

A user other than root holds at most `user_connections` at once, and all of them together leave
`root_connections` of the daemon's `connections` to root: one user's flood (or many users') costs
the daemon a bounded number of descriptors and never keeps root's calls out (settings.Limits).
"""

from __future__ import annotations

from collections import Counter

from shadowvault.service.settings import Limits


class Admission:
    """The connections each uid holds, and the decision on the next one."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._held: Counter[int] = Counter()
        self.total = 0

    def admit(self, uid: int) -> str | None:
        """Count one more connection of `uid`; or, when it may not have one, why (nothing counted)."""
        limits = self.limits
        if uid == 0:
            if self.total >= limits.connections:
                return f"the daemon holds {self.total} connections, the most it takes"
        elif self._held[uid] >= limits.user_connections:
            return (
                f"uid {uid} has {self._held[uid]} connections open, the most a user other than root may have"
            )
        elif self.total >= limits.connections - limits.root_connections:
            return f"the daemon holds {self.total} connections, the most it takes from users other than root"
        self._held[uid] += 1
        self.total += 1
        return None

    def release(self, uid: int) -> None:
        """A connection admitted for `uid` has closed."""
        self._held[uid] -= 1
        if self._held[uid] <= 0:
            del self._held[uid]
        self.total -= 1
