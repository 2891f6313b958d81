"""The daemon's VM runs: POST /v1/vm-backups and /v1/vm-restores (root only: policy BACKUP, RESTORE).

They call the same reporting jobs as the CLI in process (jobs/vm_reporting.py), so the summary is
what the CLI prints; a backup's warnings are the run's `warning` events. A VM backup run here makes
its shadow set (the qemu writer, its watchdog) in the daemon's process.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shadowvault.jobs.backup_vm import VmBackupRequest
from shadowvault.jobs.vm_reporting import VmRestoreOrder, backup_vm_reporting, restore_vm_reporting
from shadowvault.service import request_body
from shadowvault.service.handlers import Api
from shadowvault.service.policy import Action
from shadowvault.service.responses import json_response
from shadowvault.service.run_work import Follow, RepositoryAccess
from shadowvault.service.runs import Run, Runs, Work


class VmBackupBody(RepositoryAccess, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/vm-backups."""

    request: VmBackupRequest


class VmRestoreBody(RepositoryAccess, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/vm-restores."""

    order: VmRestoreOrder

    def __post_init__(self) -> None:
        super().__post_init__()
        request_body.absolute([self.order.target] if self.order.target is not None else [], "order.target")


def vm_backup_work(body: VmBackupBody) -> Work:
    def work(run: Run, follow: Follow) -> tuple[dict[str, Any], int]:
        with body.open(write=True, kind="backup") as repo:
            return backup_vm_reporting(repo, body.request, run.emit), 0

    return work


def vm_restore_work(body: VmRestoreBody) -> Work:
    body.order.check()  # a request that makes no restore is refused before a run starts

    def work(run: Run, follow: Follow) -> tuple[dict[str, Any], int]:
        with body.open(write=False, kind="restore") as repo:
            return restore_vm_reporting(repo, body.order), 0

    return work


def routes(api: Api, runs: Runs) -> list[web.RouteDef]:
    """The VM routes, beside the other runs' (service/run_handlers.py)."""

    async def start_vm_backup(request: web.Request) -> web.Response:
        peer = api.allow(request, Action.BACKUP)
        body = request_body.parse(await api.body(request), VmBackupBody)
        run = runs.start("backup", peer.uid, f"backup of VM {body.request.vm}", vm_backup_work(body))
        return json_response(run.report(), status=202)

    async def start_vm_restore(request: web.Request) -> web.Response:
        peer = api.allow(request, Action.RESTORE)
        body = request_body.parse(await api.body(request), VmRestoreBody)
        order = body.order
        description = f"restore of VM {order.vm} of {order.snapshot}"
        run = runs.start("restore", peer.uid, description, vm_restore_work(body))
        return json_response(run.report(), status=202)

    return [web.post("/v1/vm-backups", start_vm_backup), web.post("/v1/vm-restores", start_vm_restore)]
