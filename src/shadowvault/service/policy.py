"""Who may do what through the API: one policy object decides, the handlers only ask it.

This slice has one policy, root only. The group policy of issue 11 (`[api] requester_group` and
`requester_volumes`) will be another class with the same `check`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from shadowvault.errors import PermissionDeniedError
from shadowvault.service.peer import Peer


class Action(StrEnum):
    """What a request asks for."""

    LIST_VOLUMES = "list volumes"
    LIST_WRITERS = "list writers"
    LIST_SHADOW_SETS = "list shadow sets"
    READ_SHADOW_SET = "read a shadow set"
    CREATE_SHADOW_SET = "create a shadow set"
    DELETE_SHADOW_SET = "delete a shadow set"


class Policy(Protocol):
    """Decides whether `peer` may do `action`; raises PermissionDeniedError with the reason if not."""

    def check(self, peer: Peer | None, action: Action) -> None: ...


class RootOnly:
    """Root may do everything; anyone else is refused, with who they are and what they asked."""

    def check(self, peer: Peer | None, action: Action) -> None:
        if peer is None:
            raise PermissionDeniedError(f"may not {action}: the caller's credentials are unknown")
        if peer.uid != 0:
            raise PermissionDeniedError(f"uid {peer.uid} may not {action}: the shadowvault API is root's")
