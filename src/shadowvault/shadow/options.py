"""How a shadow set is to be made: one options object, what the requester passes to the coordinator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shadowvault.errors import UsageError
from shadowvault.shadow.providers.base import WHOLE_VOLUMES, Provider, ReadScope
from shadowvault.shadow.writers.base import Writer

DEFAULT_FREEZE_TIMEOUT = 60.0  # VSS's writer freeze window
DEFAULT_COMMIT_TIMEOUT = 10.0  # VSS's flush-and-hold window
MAX_TIMEOUT = 86400.0  # a day: past it a freeze or a commit is hung, and the waits' clocks overflow


@dataclass(frozen=True, kw_only=True)
class SetOptions:
    """Who takes part in a shadow set and the rules of its sequence (everything but its volumes).

    writers: writers to include (`name[:instance]` or an instance), in addition to the automatic ones
    provider: `auto`, a provider's name, or an instance (used for every volume)
    persistent: kept until deleted, whoever made it (else released with its requester)
    auto_writers: also the writers discovered on the volumes and declared in writers.d
    freeze_timeout / commit_timeout: seconds the writers have to freeze and the providers to commit
    backup_type: `full`, or `copy` (writers skip side effects such as log truncation)
    requester_uid: who asked for the set (the daemon's caller); None: this process's user
    client_pid: the daemon's caller, whose connection holds a set that is not persistent
    scope: what the requester will read of the volumes (a backup's paths, what it leaves out), so
    that the btrfs provider images no nested subvolume it does not read; default: all of them
    """

    writers: Sequence[str | Writer] = field(default=())
    provider: str | Provider = "auto"
    persistent: bool = False
    auto_writers: bool = True
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT
    backup_type: str = "full"
    requester_uid: int | None = None
    client_pid: int | None = None
    scope: ReadScope = WHOLE_VOLUMES

    def __post_init__(self) -> None:
        if not all(0 < t <= MAX_TIMEOUT for t in (self.freeze_timeout, self.commit_timeout)):  # NaN too
            raise UsageError(f"timeouts must be positive numbers of seconds, at most {MAX_TIMEOUT:g}")
        object.__setattr__(self, "writers", tuple(self.writers))  # frozen: no list shared with the caller

    @property
    def provider_name(self) -> str:
        """The provider as the manifest names it."""
        return self.provider if isinstance(self.provider, str) else self.provider.name


DEFAULTS = SetOptions()
