"""The /v1 routes of runs (backups, restores, jobs.d jobs), providers and /metrics.

A run is started with POST and answered at once (202) with its id; `GET /v1/runs/ID/events` streams
its events as JSON lines until it ends; `DELETE /v1/runs/ID` cancels it. A user who is not root
sees and cancels only their own runs, and starts only the jobs `[api] requester_jobs` names.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from shadowvault.errors import NotFoundError
from shadowvault.jobs import definitions, job_metrics, job_records
from shadowvault.service import application_restore_work, request_body, run_work, vm_work
from shadowvault.service.handlers import Api
from shadowvault.service.peer import Peer
from shadowvault.service.policy import Action
from shadowvault.service.responses import json_response
from shadowvault.service.runs import FINISHED, STATES, Run, Runs
from shadowvault.shadow.providers.registry import all_providers

EVENT_POLL = 0.2  # seconds between looks at a running run's new events
HEARTBEAT = 15.0  # seconds of a silent run (queued, or in a long freeze) after which a blank line is sent


class RunApi:
    """Handlers of runs, jobs, providers and metrics; they share the shadow-set API's policy and bounds."""

    def __init__(self, api: Api, runs: Runs) -> None:
        self.api = api
        self.runs = runs

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/providers", self.list_providers),
            web.post("/v1/backups", self.start_backup),
            web.post("/v1/restores", self.start_restore),
            web.post("/v1/component-restores", self.start_component_restore),
            web.post("/v1/writer-restores", self.start_writer_restore),
            web.get("/v1/jobs", self.list_jobs),
            web.post("/v1/jobs/{name}/runs", self.start_job),
            web.get("/v1/runs", self.list_runs),
            web.get("/v1/runs/{id}", self.get_run),
            web.delete("/v1/runs/{id}", self.cancel_run),
            web.get("/v1/runs/{id}/events", self.run_events),
            web.get("/metrics", self.metrics),
            *vm_work.routes(self.api, self.runs),
        ]

    def _own_run(self, peer: Peer, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if peer.uid != 0 and run.requester_uid != peer.uid:
            raise NotFoundError(f"no run {run_id}")
        return run

    async def list_providers(self, request: web.Request) -> web.Response:
        self.api.allow(request, Action.LIST_PROVIDERS)
        providers = [
            {
                "name": p.name,
                "atomic": p.atomic,
                "priority": p.priority,
                "freeze_policy": str(p.freeze_policy),
            }
            for p in all_providers()
        ]
        return json_response(providers)

    async def start_backup(self, request: web.Request) -> web.Response:
        peer = self.api.allow(request, Action.BACKUP)
        body = request_body.parse(await self.api.body(request), run_work.BackupBody)
        work = run_work.backup_work(body)
        run = self.runs.start("backup", peer.uid, f"backup of {', '.join(body.paths)}", work)
        return json_response(run.report(), status=202)

    async def start_restore(self, request: web.Request) -> web.Response:
        peer = self.api.allow(request, Action.RESTORE)
        body = request_body.parse(await self.api.body(request), run_work.RestoreBody)
        work = run_work.restore_work(body)
        run = self.runs.start("restore", peer.uid, f"restore of {body.snapshot} into {body.target}", work)
        return json_response(run.report(), status=202)

    async def start_component_restore(self, request: web.Request) -> web.Response:
        peer = self.api.allow(request, Action.RESTORE)
        body = request_body.parse(
            await self.api.body(request),
            application_restore_work.ComponentRestoreBody,
            dec_hook=application_restore_work.decode_paths,
        )
        work = application_restore_work.component_restore_work(body)
        restore = body.restore
        where = restore.options.target_root
        description = f"restore of {restore.component} of {restore.snapshot} into {where}"
        run = self.runs.start("restore", peer.uid, description, work)
        return json_response(run.report(), status=202)

    async def start_writer_restore(self, request: web.Request) -> web.Response:
        peer = self.api.allow(request, Action.RESTORE)
        body = request_body.parse(await self.api.body(request), application_restore_work.WriterRestoreBody)
        work = application_restore_work.writer_restore_work(body)
        writers = ", ".join(body.order.request.writers) or "every writer"
        run = self.runs.start(
            "restore", peer.uid, f"restore of {writers} of {body.order.request.snapshot}", work
        )
        return json_response(run.report(), status=202)

    async def list_jobs(self, request: web.Request) -> web.Response:
        self.api.allow(request, Action.LIST_JOBS)
        return json_response(await asyncio.to_thread(_jobs))

    async def start_job(self, request: web.Request) -> web.Response:
        peer = self.api.allow(request, Action.RUN_JOB)
        name = request.match_info["name"]
        self.api.policy.check_job(peer, name)
        work = await asyncio.to_thread(run_work.job_work, name)
        run = self.runs.start("job", peer.uid, f"job {name}", work)
        return json_response(run.report(), status=202)

    async def list_runs(self, request: web.Request) -> web.Response:
        peer = self.api.allow(request, Action.READ_RUN)
        return json_response([r.report() for r in self.runs.all() if peer.uid in (0, r.requester_uid)])

    async def get_run(self, request: web.Request) -> web.Response:
        peer = self.api.allow(request, Action.READ_RUN)
        return json_response(self._own_run(peer, request.match_info["id"]).report())

    async def cancel_run(self, request: web.Request) -> web.Response:
        peer = self.api.allow(request, Action.READ_RUN)
        run = self._own_run(peer, request.match_info["id"])
        return json_response(self.runs.cancel(run.id).report())

    async def run_events(self, request: web.Request) -> web.StreamResponse:
        """The run's events as JSON lines, from its first kept one until it ends."""
        peer = self.api.allow(request, Action.READ_RUN)
        run = self._own_run(peer, request.match_info["id"])
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        position = 0
        said = time.monotonic()
        while True:
            finished = run.state in FINISHED  # read first: every event is in once the state says so
            events, position = run.events_since(position)
            if events:
                await response.write(b"".join(json.dumps(e).encode() + b"\n" for e in events))
                said = time.monotonic()
            if finished:
                break
            if time.monotonic() - said >= HEARTBEAT:  # the client hears that the daemon is alive
                await response.write(b"\n")
                said = time.monotonic()
            await asyncio.sleep(EVENT_POLL)
        await response.write_eof()
        return response

    async def metrics(self, request: web.Request) -> web.Response:
        self.api.allow(request, Action.READ_METRICS)
        text = await asyncio.to_thread(_metrics_text, self.runs)
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _jobs() -> list[dict[str, Any]]:
    """Every job definition that loads, with its last recorded run (and the unusable ones' errors)."""
    good, bad = definitions.scan()
    jobs: list[dict[str, Any]] = []
    for definition in good:
        record = job_records.load_readable(definition.name)
        jobs.append(
            {
                "name": definition.name,
                "schedule": definition.schedule,
                "repository": definition.repository,
                "paths": definition.paths,
                "components": definition.components,
                "last_run": None if record is None else msgspec.to_builtins(record),
            }
        )
    jobs += [{"name": None, "file": path, "error": message} for path, message in bad]
    return jobs


def _metrics_text(runs: Runs) -> bytes:
    """The jobs' last results (as the textfile has them) and the daemon's own gauges."""
    registry = job_metrics.registry_for(job_metrics.defined_records())
    by_state = Gauge(
        "shadowvault_daemon_runs", "Runs the daemon keeps, by state", ["state"], registry=registry
    )
    for state in STATES:
        by_state.labels(state=state).set(sum(1 for r in runs.all() if r.state == state))
    return generate_latest(registry)
