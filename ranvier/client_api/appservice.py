"""Client-server endpoints for application services: ping (CS "appservice_ping"), an appservice's room
directories per network (CS "appservice_room_directory"), the third-party look-ups answered from the
appservices' protocols (CS "Third-party networks"), and the operators' view of the appservices' queues."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appservice.client import AppServiceClient, AppServiceUnreachable
from ..appservice.pusher import AppServicePusher
from .auth import Authenticator
from .errors import MatrixError, forbidden, not_found
from .http_util import read_json_body

V1 = "/_matrix/client/v1"
ADMIN_LIST = "/_ranvier/admin/v1/appservices"
V3_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class AppServiceHandlers:
    def __init__(
        self,
        authenticator: Authenticator,
        client: AppServiceClient,
        pusher: AppServicePusher,
        rooms: Any,
    ) -> None:
        """``pusher``: a successful ping ends its back-off, and it has the queue state; ``rooms``: the room
        storage (does a room exist)."""
        self._auth = authenticator
        self._client = client
        self._pusher = pusher
        self._store = pusher.store
        self._rooms = rooms

    def routes(self) -> list[web.RouteDef]:
        r = [
            web.post(V1 + "/appservice/{appservice_id}/ping", self.ping),
            web.get(ADMIN_LIST, self.admin_list),
        ]
        for p in V3_PREFIXES:
            r += [
                web.put(p + "/directory/list/appservice/{network_id}/{room_id}", self.list_room),
                web.get(p + "/thirdparty/protocols", self.protocols),
                web.get(p + "/thirdparty/protocol/{protocol}", self.protocol),
                web.get(p + "/thirdparty/location/{protocol}", self._lookup("location")),
                web.get(p + "/thirdparty/user/{protocol}", self._lookup("user")),
                web.get(p + "/thirdparty/location", self._reverse("location")),
                web.get(p + "/thirdparty/user", self._reverse("user")),
            ]
        return r

    async def ping(self, request: web.Request) -> web.Response:
        service = self._auth.require_appservice(request)
        if service.id != request.match_info["appservice_id"]:
            raise forbidden("The as_token does not belong to this application service")
        body = await read_json_body(request)
        txn_id = body.get("transaction_id")
        if txn_id is not None and not isinstance(txn_id, str):
            raise MatrixError(400, "M_INVALID_PARAM", "'transaction_id' must be a string")
        if service.url is None:
            raise MatrixError(400, "M_URL_NOT_SET", "The application service has no url")
        try:
            duration = await self._client.ping(service, txn_id)
        except AppServiceUnreachable as e:
            if e.kind == "timeout":
                raise MatrixError(504, "M_CONNECTION_TIMEOUT", str(e)) from None
            if e.kind == "status":
                bad_status = MatrixError(502, "M_BAD_STATUS", str(e))
                bad_status.extra.update(status=e.status, body=e.body)  # the appservice's answer
                raise bad_status from None
            raise MatrixError(502, "M_CONNECTION_FAILED", str(e)) from None
        self._pusher.mark_reachable(service.id)
        return web.json_response({"duration_ms": duration})

    # -- an appservice's room directories --------------------------------------------------------------

    async def list_room(self, request: web.Request) -> web.Response:
        service = self._auth.require_appservice(request)
        network_id, room_id = request.match_info["network_id"], request.match_info["room_id"]
        body = await read_json_body(request)
        visibility = body.get("visibility")
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "'visibility' must be 'public' or 'private'")
        if await self._rooms.get_room_version(room_id) is None:
            raise not_found(f"Unknown room {room_id}")
        await self._store.set_room_listed(service.id, network_id, room_id, visibility == "public")
        return web.json_response({})

    async def network_rooms(self, instance_id: str | None) -> list[str]:
        """For POST /publicRooms: the rooms of one "appservice id|network id" instance, or of all."""
        if instance_id is None:
            return await self._store.listed_rooms()
        as_id, sep, network_id = instance_id.partition("|")
        if not sep or self._auth.appservices.by_id(as_id) is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown third_party_instance_id {instance_id!r}")
        return await self._store.listed_rooms(as_id, network_id)

    # -- operators --------------------------------------------------------------------------------------

    async def admin_list(self, request: web.Request) -> web.Response:
        """Every registered appservice with its push state (server admins)."""
        requester = await self._auth.require_user(request)
        if not requester.is_admin or requester.appservice is not None:
            raise forbidden("You are not a server admin")
        out = []
        for service in self._auth.appservices.all:
            entry: dict[str, Any] = {
                "id": service.id,
                "url": service.url,
                "sender": service.sender,
                "rate_limited": service.rate_limited,
                "receive_ephemeral": service.receive_ephemeral,
                "protocols": list(service.protocols),
            }
            worker = self._pusher.workers.get(service.id)
            if worker is not None:
                stats = await self._store.stats(service.id)
                entry.update(
                    queued_events=stats.queued_events,
                    queued_ephemeral=stats.queued_ephemeral,
                    unsent_transactions=stats.unsent_txns,
                    oldest_queued_ts=stats.oldest_ts,
                    sent_transactions=worker.sent_txns,
                    sent_events=worker.sent_events,
                    failed_attempts=worker.failures,
                    consecutive_failures=worker.consecutive_failures,
                    backoff_seconds=worker.backoff,
                    last_error=worker.last_error,
                )
            out.append(entry)
        return web.json_response({"appservices": out, "total": len(out)})

    # -- third-party networks ---------------------------------------------------------------------------

    async def protocols(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        out: dict[str, Any] = {}
        for service in self._auth.appservices.all:
            for protocol in service.protocols:
                info = await self._client.thirdparty(service, f"protocol/{protocol}", {})
                if isinstance(info, dict):
                    _merge_protocol(out, protocol, info, service.id)
        return web.json_response(out)

    async def protocol(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        protocol = request.match_info["protocol"]
        out: dict[str, Any] = {}
        for service in self._auth.appservices.with_protocol(protocol):
            info = await self._client.thirdparty(service, f"protocol/{protocol}", {})
            if isinstance(info, dict):
                _merge_protocol(out, protocol, info, service.id)
        if protocol not in out:
            raise not_found(f"Unknown protocol {protocol}")
        return web.json_response(out[protocol])

    def _lookup(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            await self._auth.require_user(request)
            protocol = request.match_info["protocol"]
            results: list[Any] = []
            for service in self._auth.appservices.with_protocol(protocol):
                found = await self._client.thirdparty(service, f"{kind}/{protocol}", dict(request.query))
                if isinstance(found, list):
                    results += found
            return web.json_response(results)

        return handler

    def _reverse(self, kind: str) -> Any:
        key = "alias" if kind == "location" else "userid"

        async def handler(request: web.Request) -> web.Response:
            await self._auth.require_user(request)
            if key not in request.query:
                raise MatrixError(400, "M_MISSING_PARAM", f"Missing {key!r} query parameter")
            results: list[Any] = []
            for service in self._auth.appservices.all:
                if not service.protocols:
                    continue
                found = await self._client.thirdparty(service, kind, {key: request.query[key]})
                if isinstance(found, list):
                    results += found
            return web.json_response(results)

        return handler


def _merge_protocol(out: dict[str, Any], protocol: str, info: dict[str, Any], as_id: str) -> None:
    """Add one appservice's answer for ``protocol``: its instances get the instance id that
    /publicRooms takes (``appservice id|network id``, as Synapse), and several appservices' instances
    of one protocol are listed together."""
    info = dict(info)
    instances = []
    for instance in info.get("instances") or []:
        if isinstance(instance, dict):
            instance = dict(instance)
            network_id = instance.get("network_id")
            if isinstance(network_id, str):
                instance["instance_id"] = f"{as_id}|{network_id}"
            instances.append(instance)
    info["instances"] = instances
    if protocol in out:
        out[protocol]["instances"] = [*out[protocol].get("instances", []), *instances]
    else:
        out[protocol] = info
