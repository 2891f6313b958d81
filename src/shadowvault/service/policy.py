"""Who may do what through the API: one policy object decides, the handlers only ask it.

Root (uid 0) may do everything. Members of `[api] requester_group` (default `shadowvault`) in
shadowvault.toml may list volumes, writers and providers, create shadow sets of the volumes
`[api] requester_volumes` names (only with the writers the administrator set up: discovered ones
and writers.d), see, expose and delete their own sets, and run the jobs `[api] requester_jobs`
names. Anyone else is refused with who they are and what they asked. Membership is the peer's
group or one of its supplementary groups as the kernel recorded them at connect time
(SO_PEERCRED, SO_PEERGROUPS), never what the client says.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shadowvault import config_file
from shadowvault.errors import ConfigError, PermissionDeniedError
from shadowvault.service.peer import Peer

DEFAULT_GROUP = "shadowvault"


class Action(StrEnum):
    """What a request asks for."""

    LIST_VOLUMES = "list volumes"
    LIST_WRITERS = "list writers"
    LIST_PROVIDERS = "list providers"
    LIST_SHADOW_SETS = "list shadow sets"
    READ_SHADOW_SET = "read a shadow set"
    CREATE_SHADOW_SET = "create a shadow set"
    DELETE_SHADOW_SET = "delete a shadow set"
    EXPOSE_SHADOW_SET = "expose a shadow set"
    LIST_JOBS = "list jobs"
    RUN_JOB = "run a job"
    BACKUP = "run a backup"
    RESTORE = "run a restore"
    READ_RUN = "read a job run"
    READ_METRICS = "read the metrics"


MEMBER_ACTIONS = frozenset(Action) - {Action.BACKUP, Action.RESTORE}


@dataclass(frozen=True)
class GroupPolicy:
    """Root may do everything; members of `group` what MEMBER_ACTIONS allows, on their own sets.

    volumes: mount points members may shadow; jobs: jobs.d names members may run.
    """

    group: str = DEFAULT_GROUP
    volumes: Sequence[str] = field(default=())
    jobs: Sequence[str] = field(default=())

    def _gid(self) -> int | None:
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            return None

    def is_member(self, peer: Peer) -> bool:
        gid = self._gid()
        return gid is not None and (peer.gid == gid or gid in peer.groups)

    def check(self, peer: Peer | None, action: Action) -> None:
        """PermissionDeniedError unless `peer` may do `action` at all."""
        if peer is None:
            raise PermissionDeniedError(f"may not {action}: the caller's credentials are unknown")
        if peer.uid == 0:
            return
        if action in MEMBER_ACTIONS and self.is_member(peer):
            return
        raise PermissionDeniedError(
            f"uid {peer.uid} may not {action}: the shadowvault API is root's and the {self.group} group's"
            if action in MEMBER_ACTIONS
            else f"uid {peer.uid} may not {action}: only root may"
        )

    def may_see(self, peer: Peer, owner_uid: int | None) -> bool:
        """Whether `peer` may see (read, expose, delete) a set that `owner_uid` asked for."""
        return peer.uid == 0 or (owner_uid is not None and owner_uid == peer.uid)

    def check_create(self, peer: Peer, volumes: Sequence[str], writers: Sequence[str]) -> None:
        """A member shadows only the allowed volumes, with no writers of their own naming."""
        if peer.uid == 0:
            return
        if writers:
            raise PermissionDeniedError(
                f"uid {peer.uid} may not name writers: only root may (the writers discovered on the "
                "volumes and those in writers.d take part)"
            )
        allowed = {os.path.realpath(v) for v in self.volumes}
        for volume in volumes:
            if os.path.realpath(volume) not in allowed:
                raise PermissionDeniedError(
                    f"uid {peer.uid} may not shadow {volume}: [api] requester_volumes does not allow it"
                )

    def check_job(self, peer: Peer, job: str) -> None:
        if peer.uid != 0 and job not in self.jobs:
            raise PermissionDeniedError(
                f"uid {peer.uid} may not run the job {job}: [api] requester_jobs does not allow it"
            )


def _strings(table: dict[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{config_file.config_path()}: [api] {key} must be a list of strings")
    return value


def configured_policy() -> GroupPolicy:
    """The policy of `[api]` in shadowvault.toml (defaults: group shadowvault, no volumes, no jobs)."""
    table = config_file.section("api")
    group = table.get("requester_group", DEFAULT_GROUP)
    if not isinstance(group, str) or not group:
        raise ConfigError(f"{config_file.config_path()}: [api] requester_group must be a group name")
    return GroupPolicy(
        group=group, volumes=_strings(table, "requester_volumes"), jobs=_strings(table, "requester_jobs")
    )
