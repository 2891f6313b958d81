"""The /v1 shadow-set routes: each asks the policy, reads a bounded body, and runs the work in a thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from aiohttp import web

from shadowvault.service import request_body, shadow_sets
from shadowvault.service.ownership import Ownership
from shadowvault.service.peer import Peer, peer_of
from shadowvault.service.policy import Action, GroupPolicy
from shadowvault.service.responses import BodyTooLarge, RequestTimeout, json_response
from shadowvault.service.settings import Limits
from shadowvault.service.shadow_sets import CompleteRequest, ExposeRequest, ShadowSetService


class Api:
    """The handlers, with what they share: the policy, the limits, the sets and who owns them."""

    def __init__(
        self,
        policy: GroupPolicy,
        limits: Limits,
        ownership: Ownership,
        sets: ShadowSetService,
        coordinator_pool: Executor,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.ownership = ownership
        self.sets = sets
        self.coordinator_pool = coordinator_pool  # creations queue here, never starving the other calls

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/ping", self.ping),
            web.get("/v1/volumes", self.list_volumes),
            web.get("/v1/writers", self.list_writers),
            web.get("/v1/shadow-sets", self.list_shadow_sets),
            web.post("/v1/shadow-sets", self.create_shadow_set),
            web.get("/v1/shadow-sets/{id}", self.get_shadow_set),
            web.delete("/v1/shadow-sets/{id}", self.delete_shadow_set),
            web.post("/v1/shadow-sets/{id}/complete", self.complete_shadow_set),
            web.post("/v1/shadow-sets/{id}/exposures", self.expose),
            web.delete("/v1/shadow-sets/{id}/exposures", self.unexpose_set),
            web.delete("/v1/exposures", self.unexpose_at),
        ]

    def allow(self, request: web.Request, action: Action) -> Peer:
        """The caller, if it may do `action` (PermissionDeniedError if not)."""
        peer = peer_of(request.transport)
        self.policy.check(peer, action)
        assert peer is not None
        return peer

    async def body(self, request: web.Request) -> bytes:
        declared = request.content_length
        if declared is not None and declared > self.limits.body_bytes:
            raise BodyTooLarge(f"the request body is larger than {self.limits.body_bytes} bytes")
        try:
            async with asyncio.timeout(self.limits.read_timeout):
                return await request.read()
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.limits.read_timeout:g} s"
            ) from None
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"the request body is larger than {self.limits.body_bytes} bytes") from None

    async def ping(self, request: web.Request) -> web.Response:
        """Anyone may ask: what a client asks first, to know that a daemon answers (and quickly)."""
        return json_response({"api": "v1"})

    async def list_volumes(self, request: web.Request) -> web.Response:
        self.allow(request, Action.LIST_VOLUMES)
        return json_response(await asyncio.to_thread(shadow_sets.volumes))

    async def list_writers(self, request: web.Request) -> web.Response:
        self.allow(request, Action.LIST_WRITERS)
        return json_response(await asyncio.to_thread(shadow_sets.writers))

    async def list_shadow_sets(self, request: web.Request) -> web.Response:
        peer = self.allow(request, Action.LIST_SHADOW_SETS)
        return json_response(await asyncio.to_thread(self.sets.list_sets, peer))

    async def get_shadow_set(self, request: web.Request) -> web.Response:
        peer = self.allow(request, Action.READ_SHADOW_SET)
        return json_response(await asyncio.to_thread(self.sets.get, peer, request.match_info["id"]))

    async def create_shadow_set(self, request: web.Request) -> web.Response:
        peer = self.allow(request, Action.CREATE_SHADOW_SET)
        wanted = shadow_sets.parse_create(await self.body(request))
        transport = request.transport
        # The freeze runs in a thread; shielded, so that a set made after its requester left still
        # gets an owner (and is released at once) instead of being forgotten.
        loop = asyncio.get_running_loop()
        making = loop.run_in_executor(self.coordinator_pool, self.sets.create, peer, wanted)
        manifest = await asyncio.shield(making)
        if not manifest.persistent:
            self.ownership.own(transport, manifest.id)
        return json_response(manifest, status=201)

    async def delete_shadow_set(self, request: web.Request) -> web.Response:
        peer = self.allow(request, Action.DELETE_SHADOW_SET)
        set_id = await asyncio.to_thread(self.sets.delete, peer, request.match_info["id"])
        self.ownership.disown(set_id)
        return json_response({"deleted": [set_id]})

    async def complete_shadow_set(self, request: web.Request) -> web.Response:
        peer = self.allow(request, Action.DELETE_SHADOW_SET)
        wanted = request_body.parse(await self.body(request), CompleteRequest)
        manifest = await asyncio.to_thread(
            self.sets.complete, peer, request.match_info["id"], wanted.succeeded
        )
        self.ownership.disown(manifest.id)
        return json_response(manifest)

    async def expose(self, request: web.Request) -> web.Response:
        peer = self.allow(request, Action.EXPOSE_SHADOW_SET)
        wanted = request_body.parse(await self.body(request), ExposeRequest, empty_ok=True)
        exposure = await asyncio.to_thread(self.sets.expose, peer, request.match_info["id"], wanted)
        return json_response(exposure, status=201)

    async def unexpose_set(self, request: web.Request) -> web.Response:
        peer = self.allow(request, Action.EXPOSE_SHADOW_SET)
        at = request_body.query_path(request.query.get("at"), "at")
        done = await asyncio.to_thread(self.sets.unexpose, peer, request.match_info["id"], at)
        return json_response({"unexposed": done})

    async def unexpose_at(self, request: web.Request) -> web.Response:
        peer = self.allow(request, Action.EXPOSE_SHADOW_SET)
        at = request_body.query_path(request.query.get("at"), "at")
        done = await asyncio.to_thread(self.sets.unexpose, peer, None, at)
        return json_response({"unexposed": done})
