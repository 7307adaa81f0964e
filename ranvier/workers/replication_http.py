"""Internal HTTP between Ranvier processes: writes handed to the process that persists the room.

Every room's events are persisted by one process (``RolePlan.persister_of``). A client write that reaches
another process (``PUT /rooms/{room}/send``, state, redactions, membership) is passed on unchanged to the
owner's replication listener, which serves the client API there (without rate limits: the first process
applied them) and answers after the commit, so an acknowledged event is durable. Inbound federation PDUs
are grouped by room and handed to each room's owner over ``/_ranvier/replication/v1/pdus``, which runs
the usual intake and returns the per-PDU results.

The replication listener binds loopback only. Its internal routes require ``workers.secret``; the client
API routes on it authenticate users with their access tokens, as on any client listener.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from .config import Workers
from .roles import RolePlan

logger = logging.getLogger(__name__)

PDUS_PATH = "/_ranvier/replication/v1/pdus"
FORWARDED_HEADER = "X-Ranvier-Forwarded"
# Room writes that create events: the room id is in the path.
_ROOM_WRITE = re.compile(
    r"^/_matrix/client/(?:v3|r0)/rooms/(?P<room>![^/]+)/"
    r"(?:send|state|redact|join|leave|invite|kick|ban|unban|knock)(?:/|$)"
)
_JOIN_BY_ID = re.compile(r"^/_matrix/client/(?:v3|r0)/(?:join|knock)/(?P<room>![^/]+)$")
_JOIN_BY_ALIAS = re.compile(r"^/_matrix/client/(?:v3|r0)/(?:join|knock)/(?P<alias>#[^/]+)$")
# Hop-by-hop and length headers are the proxy's own business, not the request's.
_NOT_FORWARDED = {
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "accept-encoding",
}

ReceivePdus = Callable[[str, Sequence[Any]], Awaitable[dict[str, dict[str, str]]]]
# (origin, PDU as received) -> whether it is judged now (ranvier.rooms.deferred_pdus.Retry).
Retry = Callable[[str, dict[str, Any]], Awaitable[bool]]


class PersisterUnavailable(web.HTTPServiceUnavailable):
    def __init__(self, instance: str) -> None:
        super().__init__(
            text=json.dumps(
                {"errcode": "M_UNKNOWN", "error": f"the room's writer ({instance}) is unavailable"}
            ),
            content_type="application/json",
        )


def room_of_write(method: str, path: str) -> str | None:
    """The room whose events a client request writes, or None for anything else."""
    if method not in ("PUT", "POST"):
        return None
    from urllib.parse import unquote

    match = _ROOM_WRITE.match(path) or _JOIN_BY_ID.match(path)
    return unquote(match.group("room")) if match else None


class ReplicationClient:
    def __init__(self, workers: Workers, timeout: float = 120.0) -> None:
        self._workers = workers
        self.secret = workers.secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        # What was handed to other processes, by kind (request, pdus, event, membership).
        self.counts: Counter[str] = Counter()

    @property
    def forwarded(self) -> int:
        return sum(self.counts.values())

    def base_url(self, instance: str) -> str:
        listener = self._workers.instances[instance].replication
        if listener is None:
            raise LookupError(f"{instance} has no replication listener")
        host = f"[{listener.bind}]" if ":" in listener.bind else listener.bind
        return f"http://{host}:{listener.port}"

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward_request(self, instance: str, request: web.Request) -> web.Response:
        """Pass a client request on to ``instance`` as it came, and its answer back as it went."""
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        headers[FORWARDED_HEADER] = "1"
        if request.remote:
            headers.setdefault("X-Forwarded-For", request.remote)
        try:
            async with self.session().request(
                request.method, self.base_url(instance) + request.path_qs, data=body, headers=headers
            ) as resp:
                payload = await resp.read()
                self.counts["request"] += 1
                return web.Response(
                    status=resp.status, body=payload, content_type=resp.content_type or "application/json"
                )
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning("could not forward %s %s to %s: %s", request.method, request.path, instance, e)
            raise PersisterUnavailable(instance) from None

    async def forward_pdus(self, instance: str, origin: str, pdus: list[Any]) -> dict[str, dict[str, str]]:
        secret = self._workers.secret
        try:
            async with self.session().post(
                self.base_url(instance) + PDUS_PATH,
                json={"origin": origin, "pdus": pdus},
                headers={"Authorization": f"Bearer {secret}"},
            ) as resp:
                if resp.status != 200:
                    raise PersisterUnavailable(instance)
                answer = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            logger.warning("could not hand %d PDUs from %s to %s: %s", len(pdus), origin, instance, e)
            raise PersisterUnavailable(instance) from None
        results = answer.get("pdus") if isinstance(answer, dict) else None
        if not isinstance(results, dict):
            raise PersisterUnavailable(instance)
        self.counts["pdus"] += 1
        return results


async def post_internal(
    client: ReplicationClient, instance: str, path: str, body: dict[str, Any], timeout: float | None = None
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to one of the internal routes of ``instance``: the answer's status and JSON object
    (PersisterUnavailable when it cannot be reached or answers something else). ``timeout``: seconds, in
    place of the client's default (a remote join may take minutes)."""
    extra: dict[str, Any] = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout)}
    try:
        async with client.session().post(
            client.base_url(instance) + path,
            json=body,
            headers={"Authorization": f"Bearer {client.secret}"},
            **extra,
        ) as resp:
            answer = await resp.json()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        logger.warning("could not reach %s at %s: %s", instance, path, e)
        raise PersisterUnavailable(instance) from None
    if not isinstance(answer, dict):
        raise PersisterUnavailable(instance)
    return status, answer


def forwarding_middleware(
    plan: RolePlan,
    client: ReplicationClient,
    resolve_alias: Callable[[str], Awaitable[str | None]] | None = None,
) -> Any:
    """On a process that does not persist every room: hand room writes to the room's persister.
    ``resolve_alias``: the room of one of our own aliases (a join by alias goes to that room's persister;
    another server's alias is joined here)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        room_id = room_of_write(request.method, request.path)
        if room_id is None and resolve_alias is not None and request.method == "POST":
            by_alias = _JOIN_BY_ALIAS.match(request.path)
            if by_alias is not None:
                room_id = await resolve_alias(by_alias.group("alias"))
        if room_id is not None and FORWARDED_HEADER not in request.headers:
            owner = plan.persister_of(room_id)
            if owner != plan.name:
                return await client.forward_request(owner, request)
        return await handler(request)

    return middleware


class PduRouter:
    """Inbound federation PDUs, each room's handed to the process that persists it."""

    def __init__(self, plan: RolePlan, client: ReplicationClient, local: ReceivePdus) -> None:
        self._plan = plan
        self._client = client
        self._local = local

    async def receive_pdus(self, origin: str, raw_pdus: Sequence[Any]) -> dict[str, dict[str, str]]:
        by_owner: dict[str, list[Any]] = {}
        for raw in raw_pdus:
            room_id = raw.get("room_id") if isinstance(raw, dict) else None
            # A PDU without a usable room id is judged (and refused) here like any other bad PDU.
            owner = self._plan.persister_of(room_id) if isinstance(room_id, str) else self._plan.name
            by_owner.setdefault(owner, []).append(raw)
        results: dict[str, dict[str, str]] = {}
        for owner, pdus in by_owner.items():
            if owner == self._plan.name:
                results.update(await self._local(origin, pdus))
            else:
                results.update(await self._client.forward_pdus(owner, origin, pdus))
        return results

    def route_retries(self, local: Retry, event_meta: Callable[[str], Awaitable[Any]]) -> Retry:
        """The deferred PDUs' retry (any process may take a due row): a PDU of a room another process
        persists is retried there; judged once it is stored in the timeline (rejected counts)."""

        async def retry(origin: str, raw: dict[str, Any]) -> bool:
            room_id = raw.get("room_id")
            owner = self._plan.persister_of(room_id) if isinstance(room_id, str) else self._plan.name
            if owner == self._plan.name:
                return await local(origin, raw)
            results = await self._client.forward_pdus(owner, origin, [raw])
            for event_id in results:
                meta = await event_meta(event_id)
                if meta is None or meta.outlier:
                    return False
            return bool(results)

        return retry


def bad_json(error: str) -> web.Response:
    """An internal route's answer to a body it cannot use."""
    return web.json_response({"errcode": "M_BAD_JSON", "error": error}, status=400)


def not_owned(plan: RolePlan | None, room_id: str) -> web.Response | None:
    """An internal route's answer when this process does not persist ``room_id`` (configs out of step, e.g.
    after a restart of only some processes): refused, never passed on again. None when it does."""
    if plan is None or plan.owns_room(room_id):
        return None
    return web.json_response(
        {"errcode": "M_UNKNOWN", "error": f"{plan.name} does not persist {room_id}"}, status=409
    )


async def internal_body(request: web.Request, secret: str) -> dict[str, Any] | web.Response:
    """The JSON object of a request between our processes, or the error answer to send: the sender must
    hold the deployment's ``workers.secret`` (compared in constant time) and send a JSON object."""
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {secret}".encode()):
        return web.json_response({"errcode": "M_FORBIDDEN", "error": "bad replication secret"}, status=403)
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"errcode": "M_NOT_JSON", "error": "body is not JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"errcode": "M_BAD_JSON", "error": "not an object"}, status=400)
    return body


def add_internal_routes(app: web.Application, secret: str, name: str, local: ReceivePdus) -> None:
    """The replication listener's own routes: health, and PDUs handed over by an inbound worker."""

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"instance": name})

    async def pdus(request: web.Request) -> web.Response:
        body = await internal_body(request, secret)
        if isinstance(body, web.Response):
            return body
        origin = body.get("origin")
        raw = body.get("pdus")
        if not isinstance(origin, str) or not isinstance(raw, list):
            return web.json_response({"errcode": "M_BAD_JSON", "error": "origin and pdus needed"}, status=400)
        return web.json_response({"pdus": await local(origin, raw)})

    app.router.add_get("/_ranvier/replication/health", health)
    app.router.add_post(PDUS_PATH, pdus)
